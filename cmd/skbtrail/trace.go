package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/diagnose"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/output"
	"github.com/skbtrail/skbtrail/pkg/trace"
)

type traceFlags struct {
	src, dst, proto, to, fromNetns, pod string
	sport, dport                        uint16
	syn, probe, json, noNetfilter, verb bool
	timeout                             time.Duration
	count                               int
	serviceCIDR                         string
	debugEvents                         bool
	probeSize                           int
	replyWait                           time.Duration
	nodeIPs                             []string
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if !p.Addr().Is4() {
			return p, fmt.Errorf("%s: only IPv4 is supported", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if !a.Is4() {
		return netip.Prefix{}, fmt.Errorf("%s: only IPv4 is supported", s)
	}
	return netip.PrefixFrom(a, 32), nil
}

func parseProto(s string) (uint8, error) {
	switch strings.ToLower(s) {
	case "":
		return 0, nil
	case "tcp":
		return journey.ProtoTCP, nil
	case "udp":
		return journey.ProtoUDP, nil
	case "icmp":
		return journey.ProtoICMP, nil
	}
	return 0, fmt.Errorf("--proto %q: want tcp, udp or icmp", s)
}

// buildTraceOptions validates the flags and turns them into trace options.
func buildTraceOptions(f *traceFlags) (trace.Options, error) {
	var o trace.Options
	var err error
	if f.to != "" {
		host, port, err := net.SplitHostPort(f.to)
		if err != nil {
			return o, fmt.Errorf("--to %q: want HOST:PORT", f.to)
		}
		if f.dst != "" || f.dport != 0 {
			return o, fmt.Errorf("--to cannot be combined with --dst or --dport")
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return o, fmt.Errorf("--to %q: port must be 1-65535", f.to)
		}
		f.dst, f.dport = host, uint16(p)
	}
	if f.src != "" {
		if o.Filter.Src, err = parsePrefix(f.src); err != nil {
			return o, fmt.Errorf("--src: %v", err)
		}
	}
	if f.dst != "" {
		if o.Filter.Dst, err = parsePrefix(f.dst); err != nil {
			return o, fmt.Errorf("--dst %q: want an IPv4 address or prefix", f.dst)
		}
	}
	if o.Filter.Proto, err = parseProto(f.proto); err != nil {
		return o, err
	}
	if f.syn {
		if o.Filter.Proto != 0 && o.Filter.Proto != journey.ProtoTCP {
			return o, fmt.Errorf("--syn needs --proto tcp")
		}
		o.Filter.Proto = journey.ProtoTCP
		o.Filter.SYNOnly = true
	}
	if (f.sport != 0 || f.dport != 0) && o.Filter.Proto == journey.ProtoICMP {
		return o, fmt.Errorf("ports make no sense with --proto icmp")
	}
	o.Filter.Sport, o.Filter.Dport = f.sport, f.dport
	if f.timeout <= 0 {
		return o, fmt.Errorf("--timeout must be positive")
	}
	if f.count < 0 {
		return o, fmt.Errorf("--count must be >= 0")
	}
	if f.pod != "" {
		return o, fmt.Errorf("--pod is not supported yet: use --from-netns with the pod's network namespace")
	}
	o.FromNetns, o.Timeout, o.Count = f.fromNetns, f.timeout, f.count
	if f.probeSize < 0 || f.probeSize > 65000 {
		return o, fmt.Errorf("--probe-size must be 0-65000")
	}
	if f.replyWait <= 0 {
		return o, fmt.Errorf("--reply-wait must be positive")
	}
	o.ProbeSize = f.probeSize
	if f.probe {
		o.Probe = true
		o.ProbeProto = journey.ProtoName(o.Filter.Proto)
		if o.Filter.Proto == 0 {
			o.ProbeProto = "tcp"
			o.Filter.Proto = journey.ProtoTCP
		}
		if !o.Filter.Dst.IsValid() || o.Filter.Dst.Bits() != 32 {
			return o, fmt.Errorf("--probe needs a destination address (--to HOST:PORT or --dst IP)")
		}
		if o.ProbeProto != "icmp" && o.Filter.Dport == 0 {
			return o, fmt.Errorf("--probe needs a destination port (--to HOST:PORT or --dport)")
		}
		o.ProbeDst = netip.AddrPortFrom(o.Filter.Dst.Addr(), o.Filter.Dport)
		if o.ProbeProto == "tcp" {
			// the probe's own SYN, not the handshake that may follow
			o.Filter.SYNOnly = true
		}
	}
	return o, nil
}

func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f traceFlags
	fs := pflag.NewFlagSet("trace", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.src, "src", "", "source IP[/len] of the packet as first seen")
	fs.StringVar(&f.dst, "dst", "", "destination IP[/len] of the packet as first seen")
	fs.Uint16Var(&f.sport, "sport", 0, "source port")
	fs.Uint16Var(&f.dport, "dport", 0, "destination port")
	fs.StringVar(&f.proto, "proto", "", "tcp, udp or icmp")
	fs.StringVar(&f.to, "to", "", "HOST:PORT, the same as --dst HOST --dport PORT")
	fs.BoolVar(&f.syn, "syn", false, "only TCP SYN without ACK starts a journey")
	fs.StringVar(&f.fromNetns, "from-netns", "", "network namespace (as `ip netns list` names it) where the packet first appears")
	fs.StringVar(&f.pod, "pod", "", "NS/NAME of the pod that sends the packet")
	fs.BoolVar(&f.probe, "probe", false, "send the first packet from the source namespace")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "how long to wait for matching packets")
	fs.IntVar(&f.count, "count", 1, "stop after this many journeys (0: until the timeout)")
	fs.BoolVar(&f.json, "json", false, "print one JSON journey per line")
	fs.BoolVar(&f.noNetfilter, "no-netfilter", false, "do not attach netfilter hook observers")
	fs.StringVar(&f.serviceCIDR, "service-cidr", "10.96.0.0/12", "the cluster's Service (ClusterIP) range")
	fs.IntVar(&f.probeSize, "probe-size", 0, "payload bytes of a UDP/ICMP probe (sent with DF set, to test the path MTU)")
	fs.DurationVar(&f.replyWait, "reply-wait", time.Second, "how long a delivered request waits for its reply before NO_REPLY")
	fs.StringSliceVar(&f.nodeIPs, "node-ip", nil, "address(es) peers know this node's VTEP by (flannel public-ip), for single-node diagnosis")
	fs.BoolVar(&f.debugEvents, "debug-events", false, "print every raw kernel event on stderr")
	_ = fs.MarkHidden("debug-events")
	fs.BoolVarP(&f.verb, "verbose", "v", false, "log what skbtrail does")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return usageErr("trace: %v", err)
	}
	if fs.NArg() > 0 {
		return usageErr("trace: unexpected argument %q", fs.Arg(0))
	}
	opts, err := buildTraceOptions(&f)
	if err != nil {
		return usageErr("trace: %v", err)
	}
	svc, err := netip.ParsePrefix(f.serviceCIDR)
	if err != nil {
		return usageErr("trace: --service-cidr %q: %v", f.serviceCIDR, err)
	}
	log := zap.NewNop()
	if f.verb {
		if log, err = zap.NewDevelopment(); err != nil {
			return fmt.Errorf("logger: %w", err)
		}
	}
	defer log.Sync()
	opts.Logger = log
	ec := trace.EngineConfig{Netfilter: !f.noNetfilter, ReplyWait: f.replyWait, Logger: log}
	if f.debugEvents {
		ec.OnEvent = func(e journey.Event) { fmt.Fprintf(stderr, "event %+v\n", e) }
	}
	opts.Ready = func(desc string) { fmt.Fprintln(stderr, "skbtrail: "+desc) }
	reg := netnsutil.NewRegistry()
	if err := reg.Refresh(); err != nil {
		log.Warn("listing namespaces", zap.Error(err))
	}
	var nodeIPs []netip.Addr
	for _, s := range f.nodeIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return usageErr("trace: --node-ip %q: want an IP address", s)
		}
		nodeIPs = append(nodeIPs, a)
	}
	diag := diagnose.New(diagnose.Config{ServiceCIDR: svc, Logger: log, Registry: reg, NodeIPs: nodeIPs})
	opts.Diagnose = diag.Diagnose
	if opts.FromNetns != "" {
		if _, _, err := netnsutil.ResolveName(opts.FromNetns); err != nil {
			return usageErr("trace: %v", err)
		}
	}
	if err := diag.Prepare(ctx); err != nil {
		log.Warn("node state not read before the trace", zap.Error(err))
	}

	var w output.Writer = output.NewText(stdout)
	if f.json {
		w = output.NewNDJSON(stdout)
	}
	bad := false
	res, err := trace.Run(ctx, opts, ec, func(j *journey.Journey) error {
		if j.Verdict.Kind != journey.Delivered || j.HasError() {
			bad = true
		}
		return w.Write(j)
	})
	if err != nil {
		if errors.Is(err, trace.ErrEnvironment) {
			return &exitError{code: exitUsage, err: fmt.Errorf("%v (are you root? see `skbtrail doctor`)", err)}
		}
		return &exitError{code: exitUsage, err: err}
	}
	if res.Journeys == 0 {
		return &exitError{code: exitNoPacket, err: fmt.Errorf("no matching packet seen in %s", opts.Timeout)}
	}
	if bad {
		return &exitError{code: exitProblem}
	}
	return nil
}
