#!/usr/bin/env bash
# Builds the real Kubernetes parts the cluster-mode tests run
# (kube-apiserver, kubectl, kubelet, etcd) and the real flanneld the
# flannel-real lab runs, from the Go module proxy, once per machine.
# Output: $SKBTRAIL_CACHE/k8s-$K8S_VERSION/{kube-apiserver,kubectl,kubelet},
#         $SKBTRAIL_CACHE/etcd-$ETCD_VERSION/etcd and
#         $SKBTRAIL_CACHE/flannel-$FLANNEL_VERSION/flanneld
# (flanneld alone: ~1m45s cold; v0.28.x needs a dependency version the proxy refuses)
# A cold build takes ~12 minutes on 2 cores (peak ~3 GB RAM, ~5 GB of Go caches);
# with the binaries present it returns at once, and it builds only the missing ones.
set -euo pipefail

CACHE="${SKBTRAIL_CACHE:-/var/cache/skbtrail}"
K8S_VERSION="${K8S_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
FLANNEL_VERSION="${FLANNEL_VERSION:-v0.26.7}"
GO="${GO:-go}"
k8sdir="$CACHE/k8s-$K8S_VERSION"
etcddir="$CACHE/etcd-$ETCD_VERSION"
flanneldir="$CACHE/flannel-$FLANNEL_VERSION"
export GOFLAGS=-mod=mod

# "build-components.sh flannel" builds only etcd and flanneld (the real-flanneld lab and demo).
only="${1:-}"
case "$only" in
  ""|flannel) ;;
  *) echo "usage: $0 [flannel]" >&2; exit 2 ;;
esac
if [ "$only" = flannel ] && [ -x "$etcddir/etcd" ] && [ -x "$flanneldir/flanneld" ]; then
  exit 0
fi
if [ -x "$k8sdir/kube-apiserver" ] && [ -x "$k8sdir/kubectl" ] && [ -x "$k8sdir/kubelet" ] && [ -x "$etcddir/etcd" ] && [ -x "$flanneldir/flanneld" ]; then
  exit 0
fi
mkdir -p "$etcddir" "$flanneldir"
[ "$only" = flannel ] || mkdir -p "$k8sdir"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -x "$etcddir/etcd" ]; then
  echo "building etcd $ETCD_VERSION (first run on this machine: ~1.5 min)" >&2
  mkdir -p "$work/etcd" && cd "$work/etcd"
  "$GO" mod init skbtrail.local/etcd >/dev/null 2>&1
  "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
  CGO_ENABLED=0 "$GO" build -trimpath -o "$etcddir/etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$etcddir/etcd.tmp" "$etcddir/etcd"
fi

if [ ! -x "$flanneldir/flanneld" ]; then
  echo "building flanneld $FLANNEL_VERSION (first run on this machine: ~2 min)" >&2
  mkdir -p "$work/flannel-bin"
  # flannel's main package is the module root; go install names the binary "flannel".
  # cgo: the udp backend is C (needs a C compiler; CGO_ENABLED=0 does not build).
  GOBIN="$work/flannel-bin" CGO_ENABLED=1 GOFLAGS= "$GO" install -trimpath \
    -ldflags "-X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION" \
    "github.com/flannel-io/flannel@$FLANNEL_VERSION"
  mv "$work/flannel-bin/flannel" "$flanneldir/flanneld.tmp"
  mv "$flanneldir/flanneld.tmp" "$flanneldir/flanneld"
fi

if [ "$only" = flannel ]; then
  echo "etcd and flanneld ready in $CACHE" >&2
  exit 0
fi

k8s_missing=""
for b in kube-apiserver kubectl kubelet; do
  [ -x "$k8sdir/$b" ] || k8s_missing="$k8s_missing $b"
done
if [ -n "$k8s_missing" ]; then
  echo "building$k8s_missing $K8S_VERSION (first run on this machine: ~4 min each)" >&2
  mkdir -p "$work/k8s" && cd "$work/k8s"
  "$GO" mod init skbtrail.local/k8s >/dev/null 2>&1
  staging="v0.${K8S_VERSION#v1.}"
  gomod=$("$GO" mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  {
    echo "require k8s.io/kubernetes $K8S_VERSION"
    # kubernetes points its staging modules at ./staging: take the published ones.
    sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#replace \1 => \1 '"$staging"'#p' "$gomod"
  } >> go.mod
  "$GO" mod tidy >/dev/null 2>&1 || true
  ver="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2)"
  for b in $k8s_missing; do
    "$GO" get "k8s.io/kubernetes/cmd/$b" >/dev/null
  done
  for b in $k8s_missing; do
    CGO_ENABLED=0 "$GO" build -trimpath -ldflags "$ver" -o "$k8sdir/$b.tmp" "k8s.io/kubernetes/cmd/$b"
    mv "$k8sdir/$b.tmp" "$k8sdir/$b"
  done
fi
echo "cluster components ready in $CACHE" >&2
