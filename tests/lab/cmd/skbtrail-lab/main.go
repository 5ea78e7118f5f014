// Command skbtrail-lab builds the skbtrail network-namespace lab (two
// flannel-style nodes joined by a router, see package lab), injects faults
// into it and runs skbtrail against it.
//
//	skbtrail-lab up [--fault NAME[,NAME...]] [--prefix P] [--iptables BIN] [--flavor flannel|calico]
//	skbtrail-lab faults
//	skbtrail-lab demo --skbtrail PATH [--fault NAME] [--json] [--prefix P] [--iptables BIN] [--flavor flannel|calico]
//	skbtrail-lab down --prefix P
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/skbtrail/skbtrail/tests/lab"
)

// exitCodeError makes main exit with code without printing anything more.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		var ec exitCodeError
		if errors.As(err, &ec) {
			os.Exit(ec.code)
		}
		fmt.Fprintln(os.Stderr, "skbtrail-lab:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

const usage = `usage:
  skbtrail-lab up [--fault NAME[,NAME...]] [--prefix P] [--iptables BIN] [--flavor flannel|calico]
      build the lab, print it, wait for SIGINT/SIGTERM, tear it down
  skbtrail-lab faults
      list the faults
  skbtrail-lab demo --skbtrail PATH [--fault NAME] [--json] [--prefix P] [--iptables BIN] [--flavor flannel|calico]
      build the lab, apply the fault, run
      PATH trace --from-netns <pod-a> --to 10.96.0.100:80 --probe --timeout 5s [--json]
      (for silent-dns: PATH trace --from-netns <pod-a> --proto udp --to 10.96.0.10:53 ...)
      tear the lab down and exit with the trace's exit status
  --flavor calico uses vxlan.calico (VNI 4096, UDP 4789) instead of flannel.1 (VNI 1, UDP 8472)
  skbtrail-lab down --prefix P
      delete leftover namespaces P-pod-a, P-node-a, P-router, P-node-b, P-pod-b
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "up":
		return cmdUp(ctx, rest, stdout, stderr)
	case "faults":
		return cmdFaults(rest, stdout, stderr)
	case "demo":
		return cmdDemo(ctx, rest, stdout, stderr)
	case "down":
		return cmdDown(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("skbtrail-lab "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments: %s", fs.Name(), strings.Join(fs.Args(), " "))
	}
	return nil
}

func splitFaults(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" && f != "none" {
			out = append(out, f)
		}
	}
	return out
}

func checkFaults(names []string) error {
	known := append(lab.FaultNames(), lab.IPv6FaultNames()...)
	for _, n := range names {
		found := false
		for _, k := range known {
			found = found || k == n
		}
		if !found {
			return fmt.Errorf("unknown fault %q (known: %s)", n, strings.Join(known, ", "))
		}
	}
	return nil
}

// upLab builds the lab, checks the healthy path and applies faults. On
// error the lab is already torn down.
func upLab(ctx context.Context, cfg lab.Config, faults []string) (*lab.Lab, error) {
	l, err := lab.Up(ctx, cfg)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*lab.Lab, error) {
		if derr := l.Down(); derr != nil {
			err = errors.Join(err, derr)
		}
		return nil, err
	}
	if !cfg.ConfigFaulty() {
		if err := l.Verify(ctx, 5*time.Second); err != nil {
			return fail(err)
		}
	}
	for _, f := range faults {
		if err := l.ApplyFaultContext(ctx, f); err != nil {
			return fail(err)
		}
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	return l, nil
}

// flannelFlag is the --flannel flag of up and demo.
func flannelFlag(fs *flag.FlagSet) *string {
	return fs.String("flannel", "imitation", "who programs flannel.1 (flavor flannel): imitation (the lab writes the device, routes, neighbour and FDB entries) or real (flanneld v0.26.7 per node + etcd, built once by tests/cluster/build-components.sh flannel)")
}

// labConfig applies --flannel: the real flanneld turns some faults into
// lab configuration (lab.RealFlannelScenario); the notes say which.
func labConfig(cfg lab.Config, flannel string, faults []string, stderr io.Writer) (lab.Config, []string, error) {
	switch flannel {
	case "imitation", "":
		return cfg, faults, nil
	case "real":
		if cfg.Flavor != "" && cfg.Flavor != lab.FlavorFlannel {
			return cfg, nil, fmt.Errorf("--flannel real needs --flavor %s", lab.FlavorFlannel)
		}
		cfg, faults, notes := lab.RealFlannelScenario(cfg, faults)
		for _, n := range notes {
			fmt.Fprintln(stderr, "skbtrail-lab: "+n)
		}
		return cfg, faults, nil
	}
	return cfg, nil, fmt.Errorf("--flannel %q: want imitation or real", flannel)
}

func logTo(w io.Writer) func(string, ...any) {
	return func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
}

func cmdUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("up", stderr)
	fault := fs.String("fault", "", "fault(s) to apply, comma separated (see 'skbtrail-lab faults')")
	prefix := fs.String("prefix", "", "namespace name prefix (default: random st??????)")
	ipt := fs.String("iptables", "iptables-nft", "iptables binary: iptables-nft or iptables-legacy")
	flavor := fs.String("flavor", lab.FlavorFlannel, "overlay flavour: flannel (flannel.1, VNI 1, UDP 8472) or calico (vxlan.calico, VNI 4096, UDP 4789)")
	flannel := flannelFlag(fs)
	dual := fs.Bool("dual-stack", false, "also give the pods IPv6 addresses and node-a an IPv6 web Service (ip6tables DNAT); enables the -v6 faults")
	underlay6 := fs.Bool("ipv6-underlay", false, "dual-stack, with the pods' IPv6 traffic over an IPv6 underlay (flannel-v6.1, outer IPv6); enables wrong-vtep-v6 and wrong-src-v6")
	if err := parse(fs, args); err != nil {
		return err
	}
	faults := splitFaults(*fault)
	if err := checkFaults(faults); err != nil {
		return err
	}
	cfg, faults, err := labConfig(lab.Config{Prefix: *prefix, Iptables: *ipt, Flavor: *flavor, DualStack: *dual,
		IPv6Underlay: *underlay6 || slices.ContainsFunc(faults, lab.IPv6UnderlayFault), Logf: logTo(stderr)}, *flannel, faults, stderr)
	if err != nil {
		return err
	}
	l, err := upLab(ctx, cfg, faults)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, l.Describe())
	if a := l.FlannelStateArgs(); a != nil {
		fmt.Fprintf(stdout, "flannel state for skbtrail trace: %s\n", strings.Join(a, " "))
	}
	if len(faults) > 0 {
		fmt.Fprintf(stdout, "faults applied: %s\n", strings.Join(faults, ", "))
	}
	if s := l.ProbeService(faults...); s.Protocol == "udp" {
		fmt.Fprintf(stdout, "try: ip netns exec %s bash -c 'echo query > /dev/udp/%s/%d'\n", l.PodA, s.ClusterIP, s.Port)
	} else {
		fmt.Fprintf(stdout, "try: ip netns exec %s bash -c 'exec 3<>/dev/tcp/%s/%d && echo connected'\n", l.PodA, s.ClusterIP, s.Port)
	}
	fmt.Fprintln(stdout, "lab is up; press Ctrl-C (or send SIGTERM) to tear it down")
	<-ctx.Done()
	if err := l.Down(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "lab %s torn down\n", l.Prefix)
	return nil
}

func cmdFaults(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("faults", stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	for _, f := range lab.Faults() {
		fmt.Fprintf(tw, "%s\t%s\n", f.Name, f.Description)
	}
	for _, name := range lab.IPv6FaultNames() {
		fmt.Fprintf(tw, "%s\t%s\n", name, lab.IPv6FaultDescription(name))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(stdout, "with the real flanneld (--flannel real, make demo FLANNEL=real): wrong-vtep = node-b's flanneld announces an unrouted --public-ip, wrong-src = node-a's second address picked by --iface, forward-drop adds --iptables-forward-rules=false, no-route = flanneld-stopped")
	return err
}

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", stderr)
	bin := fs.String("skbtrail", "", "path to the skbtrail binary (required)")
	fault := fs.String("fault", "", "fault to apply before tracing (see 'skbtrail-lab faults')")
	jsonOut := fs.Bool("json", false, "pass --json to skbtrail trace")
	prefix := fs.String("prefix", "", "namespace name prefix (default: random st??????)")
	ipt := fs.String("iptables", "iptables-nft", "iptables binary: iptables-nft or iptables-legacy")
	flavor := fs.String("flavor", lab.FlavorFlannel, "overlay flavour: flannel or calico")
	flannel := flannelFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if *bin == "" {
		return errors.New("demo: --skbtrail PATH is required")
	}
	path, err := exec.LookPath(*bin)
	if err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	faults := splitFaults(*fault)
	if err := checkFaults(faults); err != nil {
		return err
	}

	// an IPv6 fault needs a dual-stack lab, and its trace the IPv6 Service
	v6 := slices.ContainsFunc(faults, func(f string) bool { return slices.Contains(lab.IPv6FaultNames(), f) })
	cfg, faults, err := labConfig(lab.Config{Prefix: *prefix, Iptables: *ipt, Flavor: *flavor, DualStack: v6,
		IPv6Underlay: slices.ContainsFunc(faults, lab.IPv6UnderlayFault), Logf: logTo(stderr)}, *flannel, faults, stderr)
	if err != nil {
		return err
	}
	l, err := upLab(ctx, cfg, faults)
	if err != nil {
		return err
	}
	defer func() {
		if derr := l.Down(); derr != nil {
			fmt.Fprintf(stderr, "skbtrail-lab: teardown of %s: %v\n", l.Prefix, derr)
		}
	}()

	faultName := "none"
	if len(faults) > 0 {
		faultName = strings.Join(faults, ",")
	}
	svc := l.ProbeService(faults...)
	// Header on stderr so that --json output on stdout stays parseable.
	overlay := l.Flavor
	if l.Flannel == lab.FlannelReal {
		overlay += " (real flanneld + etcd)"
	}

	fmt.Fprintf(stderr, "lab up: prefix %s, %s (%s) -> %s/%s via %s -> %s (%s), %s overlay %s, iptables %s, fault: %s\n",
		l.Prefix, l.PodA, l.PodAIP, svc.Addr(), svc.Protocol, l.NodeA, l.PodB, l.PodBIP, overlay, l.VXLANDevice, l.Iptables, faultName)

	targs := []string{"trace", "--from-netns", l.PodA}
	to := svc.Addr()
	for _, f := range faults {
		if f == "small-mtu" {
			// a SYN fits any MTU: send a full-sized datagram with DF instead
			svc.Protocol, to = "udp", l.PodBIP+":53"
			targs = append(targs, "--probe-size", "1400")
		}
	}
	if svc.Protocol != "tcp" {
		targs = append(targs, "--proto", svc.Protocol)
	}
	targs = append(targs, "--to", to, "--probe", "--timeout", "5s")
	if v6 {
		targs = append(targs, "--service-cidr", "10.96.0.0/12,"+lab.ServiceCIDR6)
	}
	targs = append(targs, l.FlannelStateArgs()...)
	if *jsonOut {
		targs = append(targs, "--json")
	}
	cmd := exec.CommandContext(ctx, path, targs...)
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	// On Ctrl-C/SIGTERM ask the tracer to stop (so it can detach its
	// programs), and kill it only if it does not exit in time.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code := ee.ExitCode()
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		return exitCodeError{code: code}
	}
	if err != nil {
		return fmt.Errorf("demo: run %s: %w", path, err)
	}
	return nil
}

func cmdDown(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("down", stderr)
	prefix := fs.String("prefix", "", "prefix of the lab to remove (required)")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *prefix == "" {
		return errors.New("down: --prefix is required")
	}
	deleted, err := lab.DownPrefix(ctx, *prefix)
	for _, n := range deleted {
		fmt.Fprintf(stdout, "deleted netns %s\n", n)
	}
	if err != nil {
		return err
	}
	if len(deleted) == 0 {
		fmt.Fprintf(stdout, "no namespaces of lab %s found\n", *prefix)
	}
	return nil
}
