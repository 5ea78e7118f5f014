// Package trace runs traces on an Engine: the tracer loaded once, its
// pipeline, and the sessions (one per trace) that get the journeys their
// filter started. The CLI runs one session on a private engine; the daemon
// runs many on a shared one.
package trace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/probe"
	"github.com/skbtrail/skbtrail/tracer"
)

// Options describe one trace.
type Options struct {
	Filter    tracer.Filter
	FromNetns string // netns name as `ip netns list` shows it; "" = any
	Timeout   time.Duration
	Count     int // stop after this many journeys (0 = until timeout)
	// Probe, when set, sends one packet of ProbeProto to ProbeDst from FromNetns.
	Probe      bool
	ProbeProto string
	ProbeDst   netip.AddrPort
	ProbeSize  int // UDP/ICMP payload bytes (DF set)
	// NetfilterAll attaches the netfilter observers to every namespace
	// before the trace starts; otherwise each namespace gets them when a
	// tracked packet first reaches it (the filter's own netns at once).
	NetfilterAll bool
	// Ready is called once the trace's filter is in the kernel.
	Ready func(desc string)
	// BeforeReady, when set, runs after the programs are attached and
	// before Ready (the work done alongside: it waits for it); what it
	// returns is added to the ready line.
	BeforeReady func() string
	// Diagnose adds findings to a finished journey (on the session's goroutine).
	Diagnose func(*journey.Journey)
	Logger   *zap.Logger
}

// Result summarises a finished trace.
type Result struct {
	Journeys int
	Lost     uint64 // journeys that finished but could not be handed to this trace
	// ProbeError says why the --probe packet could not be sent ("": it
	// was, or no probe): with no journey, it is the answer.
	ProbeError string
}

// ErrEnvironment marks errors of the machine (privilege, kernel feature).
var ErrEnvironment = errors.New("environment")

// Trace runs one session: install the filter, optionally probe, and hand
// each journey it started (diagnosed) to emit until Count or the timeout.
func (e *Engine) Trace(ctx context.Context, o Options, emit func(*journey.Journey) error) (res Result, err error) {
	log := o.Logger
	if log == nil {
		log = e.log
	}
	var fromPath string
	if o.FromNetns != "" {
		path, ino, err := netnsutil.ResolveName(o.FromNetns)
		if err != nil {
			return res, err
		}
		fromPath = path
		o.Filter.Netns = uint32(ino)
	} else if o.Probe {
		path, _, err := netnsutil.ResolveName("host")
		if err != nil {
			return res, err
		}
		fromPath = path
	}
	s, err := e.open(o.Filter, o.NetfilterAll)
	note := ""
	if o.BeforeReady != nil {
		// also on error: the work alongside ends before Trace returns
		if n := o.BeforeReady(); n != "" {
			note = ", " + n
		}
	}
	if err != nil {
		return res, err
	}
	defer e.closeSession(s)
	if o.Ready != nil {
		if d := e.degraded; len(d) > 0 {
			o.Ready("degraded: " + strings.Join(d, "; "))
		}
		o.Ready(describe(o) + e.attachedText(o.NetfilterAll) + note)
	}
	probeErr := make(chan string, 1)
	if o.Probe {
		go func() {
			if err := probe.Send(ctx, fromPath, o.ProbeProto, o.ProbeDst, o.ProbeSize, o.Timeout); err != nil {
				log.Warn("probe failed", zap.Error(err))
				probeErr <- probeErrorText(err, fromPath, o.ProbeDst.Addr())
			}
		}()
	}
	defer func() {
		select {
		case res.ProbeError = <-probeErr:
		default: // sent, or still trying when the trace ended
		}
	}()
	return e.sess.wait(ctx, s, waitSpec{
		Timeout: o.Timeout,
		Count:   o.Count,
		Handle: func(j *journey.Journey) error {
			if o.Diagnose != nil {
				o.Diagnose(j)
			}
			return emit(j)
		},
		Log: log,
	})
}

func describe(o Options) string {
	f := o.Filter
	s := "tracing"
	if f.Proto != 0 {
		s += " " + journey.ProtoName(f.Proto)
	}
	if f.SYNOnly {
		s += " SYN"
	}
	if f.Src.IsValid() {
		s += " src " + f.Src.String()
	}
	if f.Sport != 0 {
		s += fmt.Sprintf(" sport %d", f.Sport)
	}
	if f.Dst.IsValid() {
		s += " dst " + f.Dst.String()
	}
	if f.Dport != 0 {
		s += fmt.Sprintf(" dport %d", f.Dport)
	}
	if o.FromNetns != "" {
		s += " from netns " + o.FromNetns
	}
	if o.Probe {
		s += fmt.Sprintf(" (probe %s to %s)", o.ProbeProto, o.ProbeDst)
	}
	return s + fmt.Sprintf(", timeout %s", o.Timeout)
}

// probeErrorText is why a probe was not sent; a probe bigger than the path
// MTU the sender's kernel learned (from an ICMP error about an earlier
// packet) is refused locally, before any packet exists to trace.
func probeErrorText(err error, fromPath string, dst netip.Addr) string {
	msg := "the probe was not sent: " + err.Error()
	if errors.Is(err, unix.EMSGSIZE) {
		if mtu := pathMTU(fromPath, dst); mtu > 0 {
			msg += fmt.Sprintf(" (the sender's kernel knows a path MTU of %d toward %s, learned from an ICMP error about an earlier packet: the path does not carry this size; a smaller --probe-size fits)", mtu, dst)
		}
	}
	return msg
}

// pathMTU is the MTU of the route (or its cached path MTU) from the
// namespace at path toward dst; 0 when unknown.
func pathMTU(path string, dst netip.Addr) int {
	if path == "" {
		path = "/proc/self/ns/net"
	}
	h, err := netnsutil.NewHandle(path)
	if err != nil {
		return 0
	}
	defer h.Close()
	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return 0
	}
	return routes[0].MTU
}
