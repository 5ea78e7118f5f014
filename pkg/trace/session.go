package trace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"golang.org/x/sys/unix"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/diagnose"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/kube"
)

// TraceRequest validates a request, reads the node state its diagnosis
// needs, and runs it: the same path for the CLI and the daemon API, so both
// give the same journeys.
func (e *Engine) TraceRequest(ctx context.Context, req Request, ready func(string), emit func(*journey.Journey) error) (Result, error) {
	t0 := time.Now()
	if err := e.Registry.Refresh(); err != nil {
		e.log.Debug("rescan namespaces", zap.Error(err))
	}
	if req.Arriving && req.FromNetns == "" {
		ino, err := netnsutil.InodeOf("/proc/self/ns/net")
		if err != nil {
			return Result{}, fmt.Errorf("%w: own network namespace: %v", ErrEnvironment, err)
		}
		req.FromNetns = e.Registry.Name(ino)
	}
	if req.FromIP != "" && req.FromNetns == "" {
		ns, err := e.sourceNetns(ctx, req.FromIP)
		if err != nil {
			return Result{}, err
		}
		req.FromNetns = ns
	}
	o, err := Validate(req)
	if err != nil {
		return Result{}, err
	}
	if o.FromNetns != "" {
		if _, _, err := netnsutil.ResolveName(o.FromNetns); err != nil {
			return Result{}, &UsageError{Err: err}
		}
	}
	dc, err := DiagnoseConfig(req)
	if err != nil {
		return Result{}, &UsageError{Err: err}
	}
	if ns := dc.Flannel.EtcdNetns; ns != "" {
		if _, _, err := netnsutil.ResolveName(ns); err != nil {
			return Result{}, &UsageError{Err: fmt.Errorf("--flannel-etcd-netns: %w", err)}
		}
	}
	dc.Registry, dc.Logger = e.Registry, e.log
	mark := markMatch(o)
	dc.NFTrace = &mark
	// an IPv4 trace's packets (inner or outer) meet IPv4 rules only: the
	// ip6tables snapshots of every namespace would only slow the start
	dc.IPv4Only = o.Filter.Src.Addr().Is4() || o.Filter.Dst.Addr().Is4()
	diag := diagnose.New(dc)
	// the node state and the rule work run while the programs attach
	prepared := make(chan struct{})
	defer func() {
		<-prepared
		if err := diag.Close(); err != nil {
			e.log.Warn("remove nftrace marking tables", zap.Error(err))
		}
	}()
	go func() {
		defer close(prepared)
		tp := time.Now()
		defer func() { e.log.Debug("node state and rules prepared", zap.Duration("took", time.Since(tp))) }()
		if err := diag.Prepare(ctx); err != nil {
			e.log.Warn("node state only partly read before the trace", zap.Error(err))
		}
	}()
	o.BeforeReady = func() string {
		tw := time.Now()
		<-prepared
		e.log.Debug("trace ready", zap.Duration("since_request", time.Since(t0)), zap.Duration("waited_for_prepare", time.Since(tw)))
		return diag.RuleStats().String()
	}
	pods := NewPodIndex(req.CRIEndpoints)
	pods.Refresh(ctx)
	o.Diagnose = func(j *journey.Journey) {
		j.ResolveNames(e.Name)
		diag.Diagnose(j)
		pods.Refresh(ctx)
		j.LabelPods(pods.Pod)
		if req.Snaplen > 0 {
			j.AddFrames(WallClock())
		}
	}
	o.Ready = ready
	return e.Trace(ctx, o, emit)
}

// IsUsage reports whether err is the user's (exit status 2 with the message).
func IsUsage(err error) bool {
	var u *UsageError
	return errors.As(err, &u) || errors.Is(err, netnsutil.ErrNotFound)
}

// RunRequest traces a request on a private engine (no daemon).
func RunRequest(ctx context.Context, req Request, ec EngineConfig, ready func(string), emit func(*journey.Journey) error) (Result, error) {
	if _, err := Validate(req); err != nil {
		return Result{}, err // before loading anything
	}
	eng, err := NewEngine(ec)
	if err != nil {
		return Result{}, err
	}
	defer eng.Close()
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	engErr := make(chan error, 1)
	go func() { engErr <- eng.Run(runCtx) }()
	res, err := eng.TraceRequest(ctx, req, ready, emit)
	cancel()
	if e := <-engErr; e != nil && err == nil {
		err = e
	}
	return res, err
}

// sourceNetns names the namespace, among the ones this engine observes, that
// holds the source pod's address (Request.FromIP).
func (e *Engine) sourceNetns(ctx context.Context, ip string) (string, error) {
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return "", &UsageError{Err: fmt.Errorf("from_ip %q: want an IP address", ip)}
	}
	ns, found, err := kube.NetnsWithAddr(ctx, e.Registry, a, nil)
	if err != nil {
		return "", &UsageError{Err: fmt.Errorf("source pod %s: %w", a, err)}
	}
	if !found {
		return "", &UsageError{Err: fmt.Errorf("source pod %s: no network namespace of this node has that address", a)}
	}
	return ns.Name, nil
}

// WallClock returns a function that turns a kernel event time
// (CLOCK_MONOTONIC ns) into wall-clock time, as of now (the zero time when
// the monotonic clock cannot be read).
func WallClock() func(monoNs uint64) time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return func(uint64) time.Time { return time.Time{} }
	}
	now, mono := time.Now(), ts.Nano()
	return func(ns uint64) time.Time { return now.Add(time.Duration(int64(ns) - mono)) }
}
