package lab

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/skbtrail/skbtrail/tests/procs"
)

// Who programs the overlay of the flannel flavour (Config.Flannel).
const (
	// FlannelImitation: the lab writes flannel.1, its route, neighbour and
	// FDB entries itself (the default).
	FlannelImitation = ""
	// FlannelReal: one real flanneld per node namespace, against an etcd
	// in the lab's etcd namespace, programs them.
	FlannelReal = "real"
)

// The real flannel control plane (Config.Flannel = FlannelReal).
const (
	// RoleEtcd is the namespace of the etcd flanneld uses: Prefix-etcd,
	// attached to the router by the veth pair re (router) - eth0 (etcd).
	RoleEtcd = "etcd"
	// EtcdIP and RouterEIP are the two ends of that link (203.0.113.248/30:
	// outside the lab's two /24s, and away from BogusVTEP and
	// UnroutedPublicIP, which stay unroutable).
	EtcdIP    = "203.0.113.250"
	RouterEIP = "203.0.113.249"
	EtcdPort  = 2379

	// UnroutedPublicIP is the address Config.NodeBPublicIP usually names
	// for seed 000: node B holds it (eth0, /32) but the router does not
	// route it.
	UnroutedPublicIP = "203.0.113.21"
	// UnroutedPublicIPv6 is the same for Config.NodeBPublicIPv6: an
	// address of node B (/128) outside the router's IPv6 links.
	UnroutedPublicIPv6 = "2001:db8:ff::21"

	// FlannelNetConf is the flannel network config written to etcd.
	// SubnetMin: by default flannel never leases the network's first /24
	// (SubnetMin is the network plus one subnet), and node A's pods live
	// in 10.244.0.0/24.
	FlannelNetConf = `{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.0.0","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`
	// FlannelNetConf6 is the dual-stack config (Config.IPv6Underlay):
	// EnableIPv6 with the lab's IPv6 pod network, one /64 per node.
	FlannelNetConf6 = `{"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.0.0","EnableIPv6":true,"IPv6Network":"` + ClusterCIDR6 + `","IPv6SubnetLen":64,"IPv6SubnetMin":"fd00:10:244::","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}`
	// FlannelEtcdPrefix is flanneld's default --etcd-prefix.
	FlannelEtcdPrefix = "/coreos.com/network"

	// DefaultFlannelVersion and DefaultEtcdVersion are the versions
	// tests/cluster/build-components.sh builds into $SKBTRAIL_CACHE.
	DefaultFlannelVersion = "v0.26.7"
	DefaultEtcdVersion    = "v3.6.16"
	defaultCache          = "/var/cache/skbtrail"
)

// FlannelBinaries returns where tests/cluster/build-components.sh puts
// flanneld and etcd ($SKBTRAIL_CACHE/flannel-$FLANNEL_VERSION/flanneld and
// $SKBTRAIL_CACHE/etcd-$ETCD_VERSION/etcd) and an error naming the script if
// either is missing.
func FlannelBinaries() (flanneld, etcd string, err error) {
	env := func(k, def string) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return def
	}
	cache := env("SKBTRAIL_CACHE", defaultCache)
	flanneld = filepath.Join(cache, "flannel-"+env("FLANNEL_VERSION", DefaultFlannelVersion), "flanneld")
	etcd = filepath.Join(cache, "etcd-"+env("ETCD_VERSION", DefaultEtcdVersion), "etcd")
	for _, p := range []string{flanneld, etcd} {
		st, serr := os.Stat(p)
		if serr != nil || st.IsDir() || st.Mode().Perm()&0o111 == 0 {
			return flanneld, etcd, fmt.Errorf("lab: %s is missing or not executable: run tests/cluster/build-components.sh first (builds flanneld and etcd once per machine, ~2 min each cold)", p)
		}
	}
	return flanneld, etcd, nil
}

// proc is a process the lab started with `ip netns exec` (which execs the
// program in place: the PID is the program's own), with what restarts it.
type proc struct {
	*procs.Proc
	ns, bin string
	args    []string
}

func (l *Lab) startProc(name, ns, bin string, args ...string) (*proc, error) {
	pp, err := procs.StartInNetns(name, ns, filepath.Join(l.dir, name+".log"), bin, args...)
	if err != nil {
		return nil, fmt.Errorf("lab: %w", err)
	}
	p := &proc{Proc: pp, ns: ns, bin: bin, args: args}
	l.mu.Lock()
	l.procs = append(l.procs, p)
	l.mu.Unlock()
	return p, nil
}

// flannelNode is what one node's flanneld is started with.
type flannelNode struct {
	ns, name string
	subnet   string // pinned lease: FLANNEL_SUBNET written before the start
	publicIP string
	peerCIDR string
	// dual-stack (IPv6Underlay): the pinned FLANNEL_IPV6_SUBNET, the
	// --public-ipv6 and the other node's IPv6 pod CIDR
	subnet6, publicIP6, peerCIDR6 string
}

// startRealFlannel brings up etcd in Prefix-etcd, writes the flannel
// network config and starts one flanneld per node. Each node's lease is
// pinned to the lab's pod CIDR (10.244.0.0/24, 10.244.1.0/24) by writing
// FLANNEL_SUBNET into its --subnet-file before the start: flanneld reuses a
// previous subnet that is free and inside the network. It returns once
// both nodes have the other's pod CIDR route on flannel.1.
func (l *Lab) startRealFlannel(ctx context.Context) error {
	flanneld, etcd, err := FlannelBinaries()
	if err != nil {
		return err
	}
	if l.dir, err = os.MkdirTemp("", "skbtrail-lab-"+l.Prefix+"-"); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := l.addNetns(ctx, l.Etcd); err != nil {
		return err
	}
	if _, err := l.nsExec(ctx, l.Etcd, nil, "sysctl", "-q", "-w", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"); err != nil {
		return fmt.Errorf("lab: sysctl in %s: %w", l.Etcd, err)
	}
	for _, s := range []struct {
		ns   string
		args []string
	}{
		{l.Etcd, []string{"link", "set", "lo", "up"}},
		{l.Etcd, []string{"link", "add", "eth0", "type", "veth", "peer", "name", "re", "netns", l.Router}},
		{l.Etcd, []string{"addr", "add", EtcdIP + "/30", "dev", "eth0"}},
		{l.Etcd, []string{"link", "set", "eth0", "up"}},
		{l.Etcd, []string{"route", "add", "default", "via", RouterEIP, "dev", "eth0"}},
		{l.Router, []string{"addr", "add", RouterEIP + "/30", "dev", "re"}},
		{l.Router, []string{"link", "set", "re", "up"}},
	} {
		if err := l.ip(ctx, s.ns, s.args...); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	url := fmt.Sprintf("http://%s:%d", EtcdIP, EtcdPort)
	p, err := l.startProc("etcd", l.Etcd, etcd,
		"--name=lab", "--data-dir="+filepath.Join(l.dir, "etcd"),
		"--listen-client-urls="+url, "--advertise-client-urls="+url,
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=lab=http://127.0.0.1:2380", "--unsafe-no-fsync", "--log-level=warn")
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = InNetns(l.Etcd, func() error {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		},
	}}
	defer hc.CloseIdleConnections()
	if err := waitUntil(ctx, 30*time.Second, func() (bool, error) {
		if p.Exited() {
			return false, errors.New("exited")
		}
		resp, err := hc.Get(url + "/health")
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"true"`)), nil
	}); err != nil {
		return p.Failure(fmt.Errorf("lab: etcd not healthy: %w", err))
	}
	netConf := FlannelNetConf
	if l.IPv6Underlay {
		netConf = FlannelNetConf6
	}
	put, _ := json.Marshal(map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(FlannelEtcdPrefix + "/config")),
		"value": base64.StdEncoding.EncodeToString([]byte(netConf)),
	})
	resp, err := hc.Post(url+"/v3/kv/put", "application/json", bytes.NewReader(put))
	if err != nil {
		return p.Failure(fmt.Errorf("lab: etcd put flannel config: %w", err))
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return p.Failure(fmt.Errorf("lab: etcd put flannel config: %s: %s", resp.Status, body))
	}

	nodes := []flannelNode{
		{ns: l.NodeA, name: "flanneld-node-a", subnet: "10.244.0.1/24", publicIP: NodeAIP, peerCIDR: "10.244.1.0/24"},
		{ns: l.NodeB, name: "flanneld-node-b", subnet: "10.244.1.1/24", publicIP: NodeBIP, peerCIDR: "10.244.0.0/24"},
	}
	if l.IPv6Underlay {
		nodes[0].subnet6, nodes[0].publicIP6, nodes[0].peerCIDR6 = podGatewayA6+"/64", NodeAIP6, podSubnetB6
		nodes[1].subnet6, nodes[1].publicIP6, nodes[1].peerCIDR6 = podGatewayB6+"/64", NodeBIP6, podSubnetA6
	}
	if l.nodeBPublicIP != "" {
		nodes[1].publicIP = l.nodeBPublicIP
		if l.nodeBPublicIP != NodeBIP {
			if err := l.ip(ctx, l.NodeB, "addr", "add", l.nodeBPublicIP+"/32", "dev", "eth0"); err != nil {
				return fmt.Errorf("lab: %w", err)
			}
		}
	}
	if l.nodeBPublicIPv6 != "" {
		nodes[1].publicIP6 = l.nodeBPublicIPv6
		if l.nodeBPublicIPv6 != NodeBIP6 {
			if err := l.ip(ctx, l.NodeB, "-6", "addr", "add", l.nodeBPublicIPv6+"/128", "dev", "eth0", "nodad"); err != nil {
				return fmt.Errorf("lab: %w", err)
			}
		}
	}
	if l.nodeASecondIP != "" {
		// the underlay knows only node A's assigned address
		if err := l.ipt(ctx, l.Router, "-A", "FORWARD", "-s", l.nodeASecondIP+"/32", "-j", "DROP"); err != nil {
			return err
		}
		if err := l.ip(ctx, l.NodeA, "addr", "add", l.nodeASecondIP+"/24", "dev", "eth0"); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
	}
	var nodeProcs []*proc
	for i, n := range nodes {
		subnetFile := l.FlannelSubnetFile(n.ns)
		pin := "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=" + n.subnet + "\n"
		if n.subnet6 != "" {
			pin += "FLANNEL_IPV6_NETWORK=" + ClusterCIDR6 + "\nFLANNEL_IPV6_SUBNET=" + n.subnet6 + "\n"
		}
		if err := os.WriteFile(subnetFile, []byte(pin), 0o600); err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		addrArgs := []string{"--iface=eth0", "--public-ip=" + n.publicIP}
		if n.publicIP6 != "" {
			addrArgs = append(addrArgs, "--public-ipv6="+n.publicIP6)
		}
		if i == 0 && len(l.nodeAFlannelArgs) > 0 {
			addrArgs = l.nodeAFlannelArgs
		}
		args := append([]string{"--etcd-endpoints=" + url, "--etcd-prefix=" + FlannelEtcdPrefix}, addrArgs...)
		args = append(args, "--ip-masq=false", "--subnet-file="+subnetFile)
		if l.noForwardRules {
			args = append(args, "--iptables-forward-rules=false")
		}
		p, err := l.startProc(n.name, n.ns, flanneld, args...)
		if err != nil {
			return err
		}
		nodeProcs = append(nodeProcs, p)
	}
	for i, n := range nodes {
		p := nodeProcs[i]
		if err := waitUntil(ctx, 30*time.Second, func() (bool, error) {
			if p.Exited() {
				return false, errors.New("exited")
			}
			out, err := runCmd(ctx, nil, "ip", "-n", n.ns, "route", "show", n.peerCIDR)
			if err != nil || !strings.Contains(out, "dev "+VXLANDevice) || n.peerCIDR6 == "" {
				return err == nil && strings.Contains(out, "dev "+VXLANDevice), err
			}
			out, err = runCmd(ctx, nil, "ip", "-n", n.ns, "-6", "route", "show", n.peerCIDR6)
			return err == nil && strings.Contains(out, "dev "+VXLANDevice6), err
		}); err != nil {
			what := fmt.Sprintf("%s on %s", n.peerCIDR, VXLANDevice)
			if n.peerCIDR6 != "" {
				what += fmt.Sprintf(" and %s on %s", n.peerCIDR6, VXLANDevice6)
			}
			return p.Failure(fmt.Errorf("lab: %s: no route to %s: %w", n.ns, what, err))
		}
		data, err := os.ReadFile(l.FlannelSubnetFile(n.ns))
		if err != nil {
			return fmt.Errorf("lab: %w", err)
		}
		if !strings.Contains(string(data), "FLANNEL_SUBNET="+n.subnet+"\n") ||
			n.subnet6 != "" && !strings.Contains(string(data), "FLANNEL_IPV6_SUBNET="+n.subnet6+"\n") {
			return p.Failure(fmt.Errorf("lab: %s: flanneld did not keep the pinned lease %s; subnet file:\n%s", n.ns, n.subnet, data))
		}
	}
	return nil
}

// FlannelSubnetFile is the --subnet-file (flannel's /run/flannel/subnet.env)
// of the flanneld in node namespace ns; "" without the real flanneld or for
// another namespace.
func (l *Lab) FlannelSubnetFile(ns string) string {
	if l.dir == "" {
		return ""
	}
	switch ns {
	case l.NodeA:
		return filepath.Join(l.dir, "flanneld-node-a.env")
	case l.NodeB:
		return filepath.Join(l.dir, "flanneld-node-b.env")
	}
	return ""
}

// FlannelEtcdURL is the client URL of the lab's etcd (reachable from the
// lab's node and etcd namespaces), "" without the real flanneld.
func (l *Lab) FlannelEtcdURL() string {
	if l.Etcd == "" {
		return ""
	}
	return fmt.Sprintf("http://%s:%d", EtcdIP, EtcdPort)
}

// FlannelStateArgs are the `skbtrail trace` flags that point its diagnosis
// at this lab's flannel state: both nodes' subnet files and the etcd with
// the leases (reached from the etcd namespace). Nil without the real
// flanneld.
func (l *Lab) FlannelStateArgs() []string {
	if l.Flannel != FlannelReal || l.dir == "" {
		return nil
	}
	return []string{
		"--flannel-subnet-file", l.NodeA + "=" + l.FlannelSubnetFile(l.NodeA),
		"--flannel-subnet-file", l.NodeB + "=" + l.FlannelSubnetFile(l.NodeB),
		"--flannel-etcd", l.FlannelEtcdURL(), "--flannel-etcd-netns", l.Etcd,
	}
}

// flanneldProc is the newest flanneld process the lab started in node
// namespace ns.
func (l *Lab) flanneldProc(ns string) (*proc, error) {
	name := map[string]string{l.NodeA: "flanneld-node-a", l.NodeB: "flanneld-node-b"}[ns]
	l.mu.Lock()
	var p *proc
	for _, q := range l.procs {
		if q.Name == name {
			p = q
		}
	}
	l.mu.Unlock()
	if name == "" || p == nil {
		return nil, fmt.Errorf("lab: no flanneld runs in %s (needs Flannel: FlannelReal)", ns)
	}
	return p, nil
}

// stopFlanneld stops the flanneld the lab started in node namespace ns
// (by its PID) and waits until it has exited.
func (l *Lab) stopFlanneld(ns string) error {
	p, err := l.flanneldProc(ns)
	if err != nil {
		return err
	}
	return p.Stop(5 * time.Second)
}

// restartFlanneld stops node namespace ns's flanneld, deletes its VXLAN
// device (as a node reboot does: the new one gets a new random MAC) and
// starts flanneld again with the same flags; it returns once the new
// flanneld has written its route to peerCIDR.
func (l *Lab) restartFlanneld(ctx context.Context, ns, peerCIDR string) error {
	p, err := l.flanneldProc(ns)
	if err != nil {
		return err
	}
	if err := p.Stop(5 * time.Second); err != nil {
		return err
	}
	if err := l.ip(ctx, ns, "link", "del", "dev", l.VXLANDevice); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	q, err := l.startProc(p.Name, p.ns, p.bin, p.args...)
	if err != nil {
		return err
	}
	if err := waitUntil(ctx, 30*time.Second, func() (bool, error) {
		if q.Exited() {
			return false, errors.New("exited")
		}
		out, err := runCmd(ctx, nil, "ip", "-n", ns, "route", "show", peerCIDR)
		return err == nil && strings.Contains(out, "dev "+l.VXLANDevice), err
	}); err != nil {
		return q.Failure(fmt.Errorf("lab: %s: restarted flanneld wrote no route to %s: %w", ns, peerCIDR, err))
	}
	return nil
}

// FlannelLog returns the log of a process of the real control plane
// ("etcd", "flanneld-node-a", "flanneld-node-b"), or "" if there is none.
func (l *Lab) FlannelLog(name string) string {
	if l.dir == "" {
		return ""
	}
	data, _ := os.ReadFile(filepath.Join(l.dir, name+".log"))
	return string(data)
}

// stopProcs stops the processes the lab started, newest first.
func (l *Lab) stopProcs() error {
	l.mu.Lock()
	started := l.procs
	l.procs = nil
	l.mu.Unlock()
	var errs []error
	for i := len(started) - 1; i >= 0; i-- {
		if err := started[i].Stop(5 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func waitUntil(ctx context.Context, timeout time.Duration, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return nil
		}
		last = err
		if time.Now().After(deadline) {
			if last == nil {
				last = errors.New("condition not met")
			}
			return fmt.Errorf("after %s: %w", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
