package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// Addresses of the control-plane namespace. The /28 keeps
// lab.BogusVTEP (203.0.113.20) unroutable.
const (
	RouterCtlIP         = "203.0.113.1" // router side "rc"
	APIServerIP         = "203.0.113.2" // ctl side "eth0"
	APIServerPort       = 6443
	CtlPrefixLen        = 28
	ServiceCIDR         = "10.96.0.0/12"
	KubernetesServiceIP = "10.96.0.1"

	// CtlRole is the role suffix of the control-plane namespace:
	// <lab prefix>-ctl.
	CtlRole = "ctl"
)

// nsIdentity identifies a named netns by the nsfs dev/inode its /run/netns
// entry is bound to, so that Down never deletes a namespace someone else
// recreated under the same name.
type nsIdentity struct{ dev, ino uint64 }

func statNetns(name string) (nsIdentity, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(lab.NetnsPath(name), &st); err != nil {
		return nsIdentity{}, err
	}
	return nsIdentity{dev: uint64(st.Dev), ino: st.Ino}, nil
}

func run(ctx context.Context, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", bin, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// createCtlNetns creates netns name, links it to the lab's router with a
// veth (router "rc" 203.0.113.1/28, ctl "eth0" 203.0.113.2/28) and routes
// everything via the router. The identity of the new namespace is returned
// as soon as it exists, also when a later step fails.
func createCtlNetns(ctx context.Context, name, router string) (*nsIdentity, error) {
	return createLinkedNetns(ctx, linkedNetns{
		name: name, what: "ctl", router: router, routerDev: "rc",
		routerIP: RouterCtlIP, ip: APIServerIP, prefixLen: CtlPrefixLen,
	})
}

// linkedNetns is a namespace hanging off the lab's router.
type linkedNetns struct {
	name, what        string // netns name; what it is, for errors
	router, routerDev string // the router's netns and its end of the veth
	routerIP, ip      string // the router's and the namespace's address ("eth0")
	prefixLen         int
}

// createLinkedNetns creates netns n.name, links it to the router with a
// veth (router n.routerDev n.routerIP, namespace "eth0" n.ip) and routes
// everything via the router; no rp_filter, no IPv6. The identity of the
// new namespace is returned as soon as it exists, also when a later step
// fails.
func createLinkedNetns(ctx context.Context, n linkedNetns) (*nsIdentity, error) {
	name, router := n.name, n.router
	if _, err := os.Lstat(lab.NetnsPath(name)); err == nil {
		return nil, fmt.Errorf("cluster: network namespace %s already exists", name)
	}
	if err := run(ctx, "ip", "netns", "add", name); err != nil {
		return nil, fmt.Errorf("cluster: create %s netns: %w", n.what, err)
	}
	id, err := statNetns(name)
	if err != nil {
		return nil, fmt.Errorf("cluster: created netns %s: %w", name, err)
	}
	sysctls := []string{"net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0"}
	if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
		sysctls = append(sysctls, "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
	}
	if err := run(ctx, "ip", append([]string{"netns", "exec", name, "sysctl", "-q", "-w"}, sysctls...)...); err != nil {
		return &id, fmt.Errorf("cluster: %s sysctls: %w", n.what, err)
	}
	cidr := fmt.Sprintf("/%d", n.prefixLen)
	steps := [][]string{
		{"-n", name, "link", "set", "lo", "up"},
		{"-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", n.routerDev, "netns", router},
		{"-n", name, "addr", "add", n.ip + cidr, "dev", "eth0"},
		{"-n", name, "link", "set", "eth0", "up"},
		{"-n", router, "addr", "add", n.routerIP + cidr, "dev", n.routerDev},
		{"-n", router, "link", "set", n.routerDev, "up"},
		{"-n", name, "route", "add", "default", "via", n.routerIP, "dev", "eth0"},
	}
	for _, s := range steps {
		if err := run(ctx, "ip", s...); err != nil {
			return &id, fmt.Errorf("cluster: %s network: %w", n.what, err)
		}
	}
	return &id, nil
}

// deleteNetns deletes netns name if it is still the one identified by id.
func deleteNetns(name string, id *nsIdentity) error {
	if id == nil {
		return nil
	}
	cur, err := statNetns(name)
	if err != nil || cur != *id {
		return nil // gone, or no longer ours
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, "ip", "netns", "del", name); err != nil {
		return fmt.Errorf("cluster: delete netns: %w", err)
	}
	return nil
}

// DialIn opens a connection whose socket lives in the named network
// namespace (a socket keeps the namespace it was created in), so the
// calling process can reach addresses only routable from there.
func DialIn(ctx context.Context, netnsName, network, addr string) (net.Conn, error) {
	var conn net.Conn
	err := netnsutil.Do(lab.NetnsPath(netnsName), func() error {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		conn = c
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("cluster: dial %s %s in netns %s: %w", network, addr, netnsName, err)
	}
	return conn, nil
}
