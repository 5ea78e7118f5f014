// Package trace runs one trace: load and attach the tracer, optionally send
// a probe, rebuild journeys from the events, diagnose them and hand each to
// the caller. The daemon and the CLI share it.
package trace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
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
	// ReplyWait: how long a delivered request waits for its reply.
	ReplyWait time.Duration
	// Netfilter attaches the netfilter observers to every namespace.
	Netfilter bool
	// Ready is called once tracing is attached, with a description.
	Ready func(desc string)
	// Diagnose adds findings to a finished journey.
	Diagnose func(*journey.Journey)
	Logger   *zap.Logger
	// Event, when set, sees every raw event (debugging).
	Event func(journey.Event)
}

// Result summarises a finished trace.
type Result struct {
	Journeys int
	Lost     uint64
}

// ErrEnvironment marks errors of the machine (privilege, kernel feature).
var ErrEnvironment = errors.New("environment")

// MonotonicNow is the kernel's bpf_ktime_get_ns clock.
func MonotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// Run traces until Count journeys were reported, the timeout passed or ctx
// ended, calling emit for each journey in the order they finished.
func Run(ctx context.Context, o Options, emit func(*journey.Journey) error) (Result, error) {
	log := o.Logger
	if log == nil {
		log = zap.NewNop()
	}
	var res Result
	reg := netnsutil.NewRegistry()
	if err := reg.Refresh(); err != nil {
		return res, fmt.Errorf("list network namespaces: %w", err)
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

	reasons, err := tracer.LoadDropReasons()
	if err != nil {
		return res, fmt.Errorf("%w: %v", ErrEnvironment, err)
	}
	tr, err := tracer.New(tracer.Settings{})
	if err != nil {
		return res, fmt.Errorf("%w: %v", ErrEnvironment, err)
	}
	defer tr.Close()
	if err := tr.AttachTracepoints(); err != nil {
		return res, fmt.Errorf("%w: %v", ErrEnvironment, err)
	}
	attached := 0
	if o.Netfilter {
		for _, e := range reg.All() {
			if err := tr.AttachNetfilter(e.Path, uint32(e.Inode)); err != nil {
				log.Warn("netfilter observers not attached", zap.String("netns", e.Name), zap.Error(err))
				continue
			}
			attached++
		}
	}

	b := journey.NewBuilder(journey.Options{
		NetnsName:  func(ino uint32) string { return reg.Name(netnsutil.Inode(ino)) },
		ReasonName: reasons.Name,
		ReplyWait:  o.ReplyWait,
	})
	if _, err := tr.AddFilter(o.Filter); err != nil {
		return res, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan journey.Event, 16384)
	readErr := make(chan error, 1)
	go func() { readErr <- tr.Run(runCtx, events) }()

	if o.Ready != nil {
		desc := describe(o)
		if o.Netfilter {
			desc += fmt.Sprintf(", netfilter observers in %d namespaces", attached)
		}
		o.Ready(desc)
	}
	if o.Probe {
		go func() {
			if err := probe.Send(runCtx, fromPath, o.ProbeProto, o.ProbeDst, o.ProbeSize, o.Timeout); err != nil {
				log.Warn("probe failed", zap.Error(err))
			}
		}()
	}

	timeout := time.NewTimer(o.Timeout)
	defer timeout.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lostSeen uint64
	deliver := func(js []*journey.Journey) (bool, error) {
		for _, j := range js {
			if o.Diagnose != nil {
				o.Diagnose(j)
			}
			if err := emit(j); err != nil {
				return true, err
			}
			res.Journeys++
			if o.Count > 0 && res.Journeys >= o.Count {
				return true, nil
			}
		}
		return false, nil
	}
	updateLost := func() {
		st, err := tr.Stats()
		if err != nil {
			log.Warn("read tracer stats", zap.Error(err))
			return
		}
		if l := st.Lost(); l > lostSeen {
			b.AddLost(l - lostSeen)
			lostSeen = l
		}
	}
	for {
		select {
		case ev := <-events:
			if o.Event != nil {
				o.Event(ev)
			}
			b.Add(ev)
		case <-tick.C:
			updateLost()
			if done, err := deliver(b.Expire(MonotonicNow())); done || err != nil {
				res.Lost = lostSeen
				return res, err
			}
		case <-timeout.C:
			// drain what already arrived, then close everything still open
			for drained := false; !drained; {
				select {
				case ev := <-events:
					b.Add(ev)
				default:
					drained = true
				}
			}
			updateLost()
			_, err := deliver(b.Close())
			res.Lost = lostSeen
			return res, err
		case err := <-readErr:
			if err != nil {
				return res, err
			}
			readErr = nil
		case <-ctx.Done():
			updateLost()
			_, err := deliver(b.Close())
			res.Lost = lostSeen
			return res, err
		}
	}
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
