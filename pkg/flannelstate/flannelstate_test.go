package flannelstate

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSubnetFile(t *testing.T) {
	sf, err := ParseSubnetFile([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sf.Network != netip.MustParsePrefix("10.244.0.0/16") || sf.Subnet != netip.MustParsePrefix("10.244.1.1/24") || sf.MTU != 1450 || !sf.IPMasq {
		t.Errorf("got %+v", sf)
	}
	for _, bad := range []string{"", "garbage\n", "FLANNEL_NETWORK=10.244.0.0\n", "FLANNEL_MTU=x\nFLANNEL_NETWORK=10.244.0.0/16\n"} {
		if _, err := ParseSubnetFile([]byte(bad)); err == nil {
			t.Errorf("%q: want an error", bad)
		}
	}
	if _, err := ReadSubnetFile(filepath.Join(t.TempDir(), "missing.env")); err == nil || !strings.Contains(err.Error(), "flannel subnet file") {
		t.Errorf("missing file: %v", err)
	}
}

func TestParseLease(t *testing.T) {
	l, err := ParseLease("/coreos.com/network/subnets/10.244.1.0-24",
		[]byte(`{"PublicIP":"198.51.100.20","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"EE:A5:65:27:59:4E"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("10.244.1.0/24") || l.PublicIP != netip.MustParseAddr("198.51.100.20") || l.VtepMAC != "ee:a5:65:27:59:4e" || l.BackendType != "vxlan" {
		t.Errorf("got %+v", l)
	}
	if _, err := ParseLease("/coreos.com/network/subnets/nonsense", []byte(`{}`)); err == nil {
		t.Error("bad key: want an error")
	}
	if _, err := ParseLease("/coreos.com/network/subnets/10.244.1.0-24", []byte(`{`)); err == nil {
		t.Error("bad value: want an error")
	}
}

// A dual-stack lease as flanneld (EnableIPv6) writes it: both subnets in
// the key, the IPv6 address it announces and its flannel-v6.1 MAC.
func TestParseLeaseDualStack(t *testing.T) {
	l, err := ParseLease("/coreos.com/network/subnets/10.244.1.0-24&fd00:10:244:1::-64",
		[]byte(`{"PublicIP":"198.51.100.20","PublicIPv6":"2001:db8:b::20","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"EE:A5:65:27:59:4E"},"BackendV6Data":{"VNI":1,"VtepMAC":"6A:0B:1C:2D:3E:4F"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if l.Subnet != netip.MustParsePrefix("10.244.1.0/24") || l.IPv6Subnet != netip.MustParsePrefix("fd00:10:244:1::/64") ||
		l.PublicIPv6 != netip.MustParseAddr("2001:db8:b::20") || l.VtepMACv6 != "6a:0b:1c:2d:3e:4f" || l.VtepMAC != "ee:a5:65:27:59:4e" {
		t.Errorf("got %+v", l)
	}
	for _, key := range []string{
		"/coreos.com/network/subnets/10.244.1.0-24&",
		"/coreos.com/network/subnets/10.244.1.0-24&10.1.0.0-16",
		"/coreos.com/network/subnets/fd00::-64",
		"/coreos.com/network/subnets/10.244.1.0-24&fd00::",
	} {
		if _, err := ParseLease(key, []byte(`{}`)); err == nil {
			t.Errorf("%s: want an error", key)
		}
	}
	if _, err := ParseLease("/coreos.com/network/subnets/10.244.1.0-24", []byte(`{"PublicIPv6":"nonsense"}`)); err == nil {
		t.Error("bad PublicIPv6: want an error")
	}
	sf, err := ParseSubnetFile([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\nFLANNEL_MTU=1430\nFLANNEL_IPMASQ=false\n"))
	if err != nil {
		t.Fatal(err)
	}
	if sf.IPv6Network != netip.MustParsePrefix("fd00:10:244::/56") || sf.IPv6Subnet != netip.MustParsePrefix("fd00:10:244:1::1/64") || sf.MTU != 1430 {
		t.Errorf("subnet file %+v", sf)
	}
}

// Flannel's subnet file and its etcd leases come from outside: neither
// parser may panic, and what parses is consistent.
func FuzzParseLease(f *testing.F) {
	f.Add("/coreos.com/network/subnets/10.244.1.0-24", []byte(`{"PublicIP":"198.51.100.20","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VtepMAC":"ee:a5:65:27:59:4e"}}`))
	f.Add("/coreos.com/network/subnets/10.244.1.0-24&fd00:10:244:1::-64", []byte(`{"PublicIPv6":"2001:db8:b::20","BackendV6Data":{"VtepMAC":"6a:0b:1c:2d:3e:4f"}}`))
	f.Add("/x/10.0.0.0-8&::-0", []byte(`null`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		l, err := ParseLease(key, value)
		if err != nil {
			return
		}
		if !l.Subnet.Addr().Is4() || l.IPv6Subnet.IsValid() && !l.IPv6Subnet.Addr().Is6() {
			t.Errorf("%q: subnets %s %s", key, l.Subnet, l.IPv6Subnet)
		}
	})
}

func FuzzParseSubnetFile(f *testing.F) {
	f.Add([]byte("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"))
	f.Add([]byte("FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n# comment\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := ParseSubnetFile(data)
		if err != nil {
			return
		}
		if !sf.Network.IsValid() && !sf.Subnet.IsValid() && !sf.IPv6Network.IsValid() && !sf.IPv6Subnet.IsValid() {
			t.Errorf("%q parsed without any network or subnet", data)
		}
	})
}

func TestReadLeases(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v3/kv/range" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprintf(w, `{"kvs":[{"key":%q,"value":%q}]}`, b64("/coreos.com/network/subnets/10.244.0.0-24"),
			b64(`{"PublicIP":"192.0.2.10","BackendType":"vxlan","BackendData":{"VtepMAC":"f2:c1:53:44:44:1c"}}`))
	}))
	defer srv.Close()
	leases, err := ReadLeases(context.Background(), []string{"http://127.0.0.1:1", srv.URL}, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].PublicIP != netip.MustParseAddr("192.0.2.10") || leases[0].VtepMAC != "f2:c1:53:44:44:1c" {
		t.Errorf("got %+v", leases)
	}
	if _, err := ReadLeases(context.Background(), []string{"http://127.0.0.1:1"}, "", nil); err == nil {
		t.Error("unreachable etcd: want an error")
	}
}

func TestFlanneldNetns(t *testing.T) {
	root := t.TempDir()
	mk := func(pid, comm, ns string) {
		d := filepath.Join(root, pid, "ns")
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "comm"), []byte(comm+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(ns, filepath.Join(d, "net")); err != nil {
			t.Fatal(err)
		}
	}
	mk("10", "flanneld", "net:[4026532001]")
	mk("11", "bash", "net:[4026532002]")
	mk("12", "flannel", "net:[4026532003]")
	m, err := FlanneldNetns(root)
	if err != nil {
		t.Fatal(err)
	}
	if !m[4026532001] || m[4026532002] || !m[4026532003] || len(m) != 2 {
		t.Errorf("got %v", m)
	}
}
