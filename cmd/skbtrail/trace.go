package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/pkg/api"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/output"
	"github.com/skbtrail/skbtrail/pkg/trace"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

type traceFlags struct {
	req         trace.Request
	pod         string
	criEndpoint []string
	json        bool
	noNetfilter bool
	verbose     bool
	debugEvents bool
	replyWait   time.Duration
	socket      string
	noDaemon    bool
	pcapng      string
	snaplen     int
	svg         string
}

func traceFlagSet(f *traceFlags, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("trace", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	r := &f.req
	fs.StringVar(&r.Src, "src", "", "source IP[/len] of the packet as first seen")
	fs.StringVar(&r.Dst, "dst", "", "destination IP[/len] of the packet as first seen")
	fs.Uint16Var(&r.Sport, "sport", 0, "source port")
	fs.Uint16Var(&r.Dport, "dport", 0, "destination port")
	fs.StringVar(&r.Proto, "proto", "", "tcp, udp or icmp")
	fs.StringVar(&r.To, "to", "", "HOST:PORT, the same as --dst HOST --dport PORT")
	fs.BoolVar(&r.SYN, "syn", false, "only a TCP SYN without ACK starts a journey")
	fs.StringVar(&r.FromNetns, "from-netns", "", "network namespace (as `ip netns list` names it) where the packet first appears")
	fs.StringVar(&f.pod, "pod", "", "NS/NAME (or IP) of the pod that sends the packet, found through the container runtime (CRI) or the CNI cache")
	fs.StringSliceVar(&f.criEndpoint, "cri-endpoint", nil, "container runtime socket for --pod, e.g. unix:///run/containerd/containerd.sock (repeatable; default: containerd, CRI-O and cri-dockerd sockets)")
	fs.BoolVar(&r.Probe, "probe", false, "send the first packet from the source namespace (TCP SYN, UDP datagram or ICMP echo per --proto)")
	fs.IntVar(&r.ProbeSize, "probe-size", 0, "payload bytes of a UDP/ICMP probe (sent with DF set, to test the path MTU)")
	fs.DurationVar(&r.Timeout, "timeout", 5*time.Second, "how long to wait for matching packets")
	fs.IntVar(&r.Count, "count", 1, "stop after this many journeys (0: until the timeout)")
	fs.StringVar(&r.ServiceCIDR, "service-cidr", "10.96.0.0/12", "the cluster's Service (ClusterIP) range; dual-stack: both, comma-separated (10.96.0.0/12,fd00:10:96::/112)")
	fs.StringSliceVar(&r.NodeIPs, "node-ip", nil, "address(es) peers know this node's VTEP by (flannel public-ip), for single-node diagnosis")
	fs.StringSliceVar(&r.FlannelSubnetFiles, "flannel-subnet-file", nil, "flanneld's --subnet-file, as `[NETNS=]PATH` (repeatable; NETNS for several lab nodes on one kernel; default /run/flannel/subnet.env when it exists), read when diagnosing")
	fs.StringSliceVar(&r.FlannelEtcd, "flannel-etcd", nil, "flannel's etcd endpoint `URL`s (its --etcd-endpoints), to read its leases (PublicIP, VtepMAC) when diagnosing; none: not read")
	fs.StringVar(&r.FlannelEtcdPrefix, "flannel-etcd-prefix", "", "flannel's --etcd-prefix (default /coreos.com/network)")
	fs.StringVar(&r.FlannelEtcdNetns, "flannel-etcd-netns", "", "reach --flannel-etcd from inside this network namespace (labs)")
	fs.BoolVar(&f.json, "json", false, "print one JSON journey per line")
	fs.StringVar(&f.pcapng, "pcapng", "", "write every traced packet at every hop to this pcapng `FILE` (- for standard output; the report then goes to standard error)")
	fs.IntVar(&f.snaplen, "snaplen", DefaultSnaplen, "bytes of each packet kept for --pcapng (at most 256)")
	fs.StringVar(&f.svg, "svg", "", "draw each journey as an SVG picture in this `FILE` (FILE-2.svg, ... for the next journeys)")
	fs.StringVar(&r.Netfilter, "netfilter", "", "where netfilter hook observers go: reached (each namespace when the traced packets first reach it; the default without --probe) or all (every namespace before the first packet; the default with --probe)")
	fs.BoolVar(&f.noNetfilter, "no-netfilter", false, "do not attach netfilter hook observers (no hook attribution; loads skbtrail's own programs)")
	fs.DurationVar(&f.replyWait, "reply-wait", time.Second, "how long a delivered request waits for its reply before NO_REPLY (without a daemon)")
	fs.StringVar(&f.socket, "daemon-socket", api.DefaultSocket, "the skbtrail daemon's socket; used when a daemon serves it")
	fs.BoolVar(&f.noDaemon, "no-daemon", false, "load skbtrail's own programs even when a daemon runs")
	fs.BoolVar(&f.debugEvents, "debug-events", false, "print every raw kernel event on stderr")
	_ = fs.MarkHidden("debug-events")
	fs.BoolVarP(&f.verbose, "verbose", "v", false, "log what skbtrail does")
	return fs
}

func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f traceFlags
	fs := traceFlagSet(&f, stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return exitcode.Usagef("trace: %v", err)
	}
	if fs.NArg() > 0 {
		return exitcode.Usagef("trace: unexpected argument %q", fs.Arg(0))
	}
	if f.noNetfilter && f.req.Netfilter != "" {
		return exitcode.Usagef("trace: --netfilter and --no-netfilter cannot be combined")
	}
	logf := func(string, ...any) {}
	if f.verbose {
		logf = func(format string, args ...any) { fmt.Fprintf(stderr, "skbtrail: "+format+"\n", args...) }
	}
	if err := resolveKube(ctx, &f.req, f.pod, f.criEndpoint, logf); err != nil {
		return exitcode.Usagef("trace: %v", err)
	}
	if f.replyWait <= 0 {
		return exitcode.Usagef("trace: --reply-wait must be positive")
	}
	if _, err := trace.Validate(f.req); err != nil {
		return exitcode.Usagef("trace: %v", err)
	}
	if _, err := trace.DiagnoseConfig(f.req); err != nil {
		return exitcode.Usagef("trace: %v", err)
	}
	log := zap.NewNop()
	if f.verbose {
		var err error
		if log, err = zap.NewDevelopment(); err != nil {
			return fmt.Errorf("logger: %w", err)
		}
	}
	defer log.Sync()

	if fs.Changed("snaplen") && f.pcapng == "" {
		return exitcode.Usagef("trace: --snaplen needs --pcapng")
	}
	report := stdout
	if f.pcapng != "" {
		if f.snaplen < 1 || f.snaplen > trace.MaxSnaplen {
			return exitcode.Usagef("trace: --snaplen %d: want 1 to %d bytes", f.snaplen, trace.MaxSnaplen)
		}
		f.req.Snaplen = f.snaplen
		if f.pcapng == "-" {
			report = stderr // the packets own standard output, as with tcpdump -w -
		}
	}
	arts, err := openArtifacts(f.pcapng, f.svg, f.snaplen, stdout)
	if err != nil {
		return exitcode.Usagef("trace: %v", err)
	}
	var w output.Writer = output.NewText(report)
	if f.json {
		w = output.NewNDJSON(report)
	}
	bad, n := false, 0
	emit := func(j *journey.Journey) error {
		n++
		if j.Failed() {
			bad = true
		}
		if err := arts.write(j); err != nil {
			return err
		}
		return w.Write(j)
	}
	ready := func(desc string) { fmt.Fprintln(stderr, "skbtrail: "+desc) }

	var probeErr string // why the probe was not sent, if it was not
	err = errNoDaemonTried
	if !f.noDaemon && !f.noNetfilter { // a daemon's observers are not ours to switch off
		var done api.Done
		done, err = api.Trace(ctx, f.socket, f.req, ready, emit)
		probeErr = done.ProbeError
		if err == nil {
			log.Info("traced through the daemon", zap.String("socket", f.socket))
		}
	}
	if errors.Is(err, api.ErrNoDaemon) || err == errNoDaemonTried {
		log.Debug("no daemon; loading our own programs", zap.Error(err))
		ec := trace.EngineConfig{Netfilter: !f.noNetfilter, ReplyWait: f.replyWait, Logger: log}
		if f.debugEvents {
			ec.OnEvent = func(e journey.Event) { fmt.Fprintf(stderr, "event %+v\n", e) }
		}
		var res trace.Result
		res, err = trace.RunRequest(ctx, f.req, ec, ready, emit)
		probeErr = res.ProbeError
	}
	if summary, cerr := arts.close(); cerr != nil && err == nil {
		err = cerr
	} else if summary != "" {
		fmt.Fprintln(stderr, "skbtrail: "+summary)
	}
	var remote *api.RemoteError
	switch {
	case err == nil:
	case trace.IsUsage(err), errors.As(err, &remote):
		return exitcode.Usagef("trace: %v", err)
	case errors.Is(err, trace.ErrEnvironment):
		return &exitcode.Error{Code: exitcode.Usage, Err: fmt.Errorf("trace: %v (are you root? see `skbtrail doctor`)", err)}
	default:
		return &exitcode.Error{Code: exitcode.Usage, Err: fmt.Errorf("trace: %w", err)}
	}
	if n == 0 {
		if probeErr != "" {
			return &exitcode.Error{Code: exitcode.NoPacket, Err: fmt.Errorf("no matching packet seen in %s: %s", f.req.Timeout, probeErr)}
		}
		return &exitcode.Error{Code: exitcode.NoPacket, Err: fmt.Errorf("no matching packet seen in %s", f.req.Timeout)}
	}
	if probeErr != "" {
		fmt.Fprintln(stderr, "skbtrail: "+probeErr)
	}
	if bad {
		return &exitcode.Error{Code: exitcode.Problem}
	}
	return nil
}

var errNoDaemonTried = errors.New("daemon not tried")
