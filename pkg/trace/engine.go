package trace

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/pipeline"
	"github.com/skbtrail/skbtrail/tracer"
)

// EngineConfig configures an Engine.
type EngineConfig struct {
	Settings tracer.Settings
	// IgnoreReasons are drop reason names the drop monitor does not report.
	IgnoreReasons []string
	// Netfilter enables the netfilter observers. They are attached per
	// trace session: to every namespace for a session that asks for all
	// (a probe), otherwise to each namespace when a tracked packet first
	// shows up there, so traffic no trace follows meets no observer.
	Netfilter bool
	// ReplyWait: how long a delivered request waits for its reply.
	ReplyWait time.Duration
	// Observe sees every finished journey first (metrics). It runs on the
	// processor goroutine: it must be quick.
	Observe func(*journey.Journey)
	// Unclaimed receives journeys no session asked for (drop monitor).
	Unclaimed func(*journey.Journey)
	// OnLost is told of events the kernel or the channel lost.
	OnLost func(n uint64)
	// OnEvent sees every raw event (debugging).
	OnEvent func(journey.Event)
	// OnDemand attaches the per-packet programs (rx/tx/consume tracepoints,
	// netfilter observers) only while a trace session is open; kfree_skb
	// (the drop monitor) stays attached. The daemon's always-on mode.
	OnDemand bool
	// NetnsScope limits the engine to the namespaces whose names match
	// (path.Match patterns): several lab "nodes" on one kernel, each with
	// its own daemon. Events elsewhere are left out; nil: every namespace.
	NetnsScope []string
	// Rescan is how often namespaces are rescanned. Default 1s.
	Rescan time.Duration
	Logger *zap.Logger
}

// Engine owns the tracer and its pipeline.
type Engine struct {
	cfg      EngineConfig
	log      *zap.Logger
	tr       *tracer.Tracer
	pipe     *pipeline.Pipeline
	Registry *netnsutil.Registry
	Reasons  tracer.DropReasons

	sess     *sessions
	done     chan struct{} // closed when Run returns
	attached atomic.Int64
	degraded []string
	backends []string
	// pathTracepoints attach while a session is open (OnDemand with the
	// tp_btf backend; empty when every point stays attached, as the kprobe
	// fallback does).
	pathTracepoints []string

	actMu   sync.Mutex // serialises (de)activation of the per-packet programs
	active  int        // open sessions
	wantAll int        // open sessions that want observers everywhere

	// lazy attachment: the processor asks (nfAsk, never blocking) for
	// observers in a namespace the first time a tracked packet shows up
	// there; the attacher goroutine attaches them.
	nfAsk  chan uint32
	nfOpen atomic.Bool   // a session is open: asking makes sense
	nfWake chan struct{} // nfOpen changed: the watcher (re)starts or stops its rescan

	deliverErr atomic.Bool   // the socket-read tracepoint failed once (logged)
	nfGen      atomic.Uint64 // bumped when every observer is detached
	asked      map[uint32]bool
	askedGen   uint64
}

// NewEngine loads and attaches the programs.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	log := cfg.Logger
	if log == nil {
		log = zap.NewNop()
	}
	if cfg.Rescan == 0 {
		cfg.Rescan = time.Second
	}
	reg := netnsutil.NewRegistry()
	if err := reg.SetScope(cfg.NetnsScope); err != nil {
		return nil, &UsageError{Err: err}
	}
	if err := reg.Refresh(); err != nil {
		log.Warn("listing network namespaces", zap.Error(err))
	}
	reasons, err := tracer.LoadDropReasons()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvironment, err)
	}
	tr, err := tracer.New(cfg.Settings)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrEnvironment, err)
	}
	e := &Engine{cfg: cfg, log: log, tr: tr, Registry: reg, Reasons: reasons, done: make(chan struct{}), nfWake: make(chan struct{}, 1)}
	if err := tr.IgnoreDropReasons(reasonValues(reasons, cfg.IgnoreReasons, log)); err != nil {
		tr.Close()
		return nil, err
	}
	plan, err := attachBackends(tr, tracer.EngineFeatures(cfg.Netfilter), cfg.OnDemand, log)
	if err != nil {
		tr.Close()
		return nil, err
	}
	e.backends, e.pathTracepoints, e.cfg.Netfilter = plan.backends, plan.pathTracepoints, plan.netfilter
	if plan.deliver {
		e.attachDeliver()
	}
	if e.cfg.Netfilter {
		e.nfAsk = make(chan uint32, 64)
		e.asked = map[uint32]bool{}
	}
	e.degraded = plan.feat.Degraded()
	for _, d := range e.degraded {
		log.Info("degraded capability", zap.String("what", d))
	}
	bo := journey.Options{
		NetnsName:  func(ino uint32) string { return reg.NameNow(netnsutil.Inode(ino)) }, // never blocks the processor: consumers ResolveNames
		ReasonName: reasons.Name,
		ReplyWait:  cfg.ReplyWait,
	}
	if len(cfg.NetnsScope) > 0 {
		bo.InScope = func(ino uint32) bool { return reg.InScope(netnsutil.Inode(ino)) }
	}
	e.pipe = pipeline.New(pipeline.Config{
		Source:    tr,
		Builder:   bo,
		OnJourney: e.dispatch,
		OnEvent:   e.onEvent,
		OnLost:    cfg.OnLost,
		Logger:    log,
	})
	e.sess = newSessions(sessionsConfig{
		Filters:   tr,
		Closer:    e.pipe,
		Done:      e.done,
		Observe:   cfg.Observe,
		Unclaimed: cfg.Unclaimed,
	})
	return e, nil
}

// reasonValues are this kernel's values of the named drop reasons; a name
// it does not know is logged and left out.
func reasonValues(reasons tracer.DropReasons, names []string, log *zap.Logger) []uint32 {
	var out []uint32
	for _, name := range names {
		v, ok := reasons.Value(name)
		if !ok {
			log.Warn("drop reason not known to this kernel; not ignored", zap.String("reason", name))
			continue
		}
		out = append(out, v)
	}
	return out
}

// backendAttacher is what the backend choice needs of the tracer. Each
// call is all or nothing: a failed attach leaves nothing attached.
type backendAttacher interface {
	AttachTracepoints(names ...string) error
	AttachKprobes(points ...tracer.HookPoint) error
	LoadNetfilter() error
}

// backendPlan is what attachBackends attached and what the engine does
// next.
type backendPlan struct {
	// feat is what this kernel turned out to offer, learned by attaching
	// (the full probe is `skbtrail doctor`): it decides the
	// degraded-capability notes.
	feat     tracer.Features
	backends []string
	// pathTracepoints attach while a session is open (OnDemand on the
	// tp_btf backend); empty when they are attached for good.
	pathTracepoints []string
	// deliver: attach the optional socket-read tracepoint now.
	deliver bool
	// netfilter: the observers loaded, to attach per session.
	netfilter bool
}

// attachBackends executes tracer.ChooseBackends: tp_btf points, then the
// kprobe points, then the netfilter observers, each group in one
// all-or-nothing attach. A group that fails turns its feature off and the
// plan is chosen again from what is learned, so a fallback never runs next
// to half of the backend it replaces; features only ever turn off, so a
// new plan only moves points to a later rung and never needs what was
// attached before undone. onDemand attaches only the drop monitor's
// tracepoint now and the path tracepoints per session; the kprobe
// fallback stays attached whole.
func attachBackends(tr backendAttacher, feat tracer.Features, onDemand bool, log *zap.Logger) (backendPlan, error) {
	p := backendPlan{feat: feat}
	var tpDone, kpDone bool
	for range 4 { // one round per feature that can turn off, plus the last
		x := tracer.Execute(tracer.ChooseBackends(p.feat))
		if len(x.Tracepoints) == 0 && len(x.Kprobes) == 0 {
			return p, fmt.Errorf("%w: no backend can attach: tp_btf: %s; kprobe: %s", ErrEnvironment, p.feat.TpBTF.Detail, p.feat.Kprobe.Detail)
		}
		if !tpDone && len(x.Tracepoints) > 0 {
			now := x.Tracepoints
			if onDemand {
				now, p.pathTracepoints = splitDrop(x.Tracepoints)
			}
			if err := tr.AttachTracepoints(now...); err != nil {
				p.feat.TpBTF = tracer.Feature{Name: "tp_btf", Detail: err.Error()}
				p.pathTracepoints = nil
				log.Warn("tp_btf unavailable; choosing the backends again", zap.Error(err))
				continue
			}
			tpDone = true
			p.backends = append(p.backends, "tp_btf")
			p.deliver = !onDemand && slices.Contains(x.Tracepoints, tracer.TPConsume)
		}
		if !kpDone && len(x.Kprobes) > 0 {
			if err := tr.AttachKprobes(x.Kprobes...); err != nil {
				p.feat.Kprobe = tracer.Feature{Name: "kprobe", Detail: err.Error()}
				log.Debug("kprobe backend unavailable; choosing the backends again", zap.Error(err))
				continue
			}
			kpDone = true
			p.backends = append(p.backends, "kprobe")
		}
		if x.Netfilter {
			if err := tr.LoadNetfilter(); err != nil {
				p.feat.NetfilterLink = tracer.Feature{Name: "netfilter_link", Detail: err.Error()}
				log.Warn("netfilter observers unavailable; choosing the backends again", zap.Error(err))
				continue
			}
			p.backends = append(p.backends, "netfilter_link")
			p.netfilter = true
		}
		return p, nil
	}
	return p, fmt.Errorf("%w: the backend choice did not settle: %+v", ErrEnvironment, p.feat)
}

// splitDrop separates the drop monitor's tracepoint (attached for good)
// from the path tracepoints (attached per session).
func splitDrop(tps []string) (now, path []string) {
	for _, tp := range tps {
		if tp == tracer.TPDrop {
			now = append(now, tp)
		} else {
			path = append(path, tp)
		}
	}
	return now, path
}

// Degraded lists, one line each, what this kernel lacks and what that
// costs (empty: every hook point has its preferred backend).
func (e *Engine) Degraded() []string { return e.degraded }

// Backends names the kernel mechanisms the engine traces with.
func (e *Engine) Backends() []string { return e.backends }

// Counters are the events that never reached a journey (metrics).
func (e *Engine) Counters() pipeline.Counters { return e.pipe.Counters() }

// Tracer gives access to the loaded tracer (stats, filters).
func (e *Engine) Tracer() *tracer.Tracer { return e.tr }

// Run runs the pipeline and the namespace watcher until ctx ends.
func (e *Engine) Run(ctx context.Context) error {
	defer close(e.done)
	if e.cfg.Netfilter {
		go e.watchNamespaces(ctx)
	}
	return e.pipe.Run(ctx)
}

// watchNamespaces attaches the observers the processor asks for and, every
// Rescan, follows namespaces appearing (sessions that want all) and
// vanishing.
func (e *Engine) watchNamespaces(ctx context.Context) {
	// the rescan ticks only while a session is open: an idle daemon does
	// not wake for it (open signals nfWake)
	var t *time.Ticker
	var tick <-chan time.Time
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	retry := map[uint32]int{} // asked for, not attached yet (netns not listed yet, say): tries left
	for {
		if open := e.nfOpen.Load(); open && t == nil {
			t = time.NewTicker(e.cfg.Rescan)
			tick = t.C
		} else if !open && t != nil {
			t.Stop()
			t, tick = nil, nil
			clear(retry)
		}
		select {
		case <-ctx.Done():
			return
		case <-e.nfWake:
		case ino := <-e.nfAsk:
			e.actMu.Lock()
			if e.active > 0 && !e.attachOne(ino) {
				retry[ino] = 5
			}
			e.actMu.Unlock()
		case <-tick:
			e.actMu.Lock()
			if e.active > 0 {
				e.syncNamespaces(e.wantAll > 0)
				for ino, left := range retry {
					if e.attachOne(ino) || left <= 1 {
						delete(retry, ino)
					} else {
						retry[ino] = left - 1
					}
				}
			} else {
				clear(retry)
			}
			e.actMu.Unlock()
		}
	}
}

// onEvent runs on the processor goroutine for every event: the first
// tracked packet in a namespace without observers asks for them.
func (e *Engine) onEvent(ev journey.Event) {
	if e.cfg.OnEvent != nil {
		e.cfg.OnEvent(ev)
	}
	if ev.Journey == 0 || e.nfAsk == nil || !e.nfOpen.Load() {
		return
	}
	if g := e.nfGen.Load(); g != e.askedGen {
		clear(e.asked) // everything was detached since
		e.askedGen = g
	}
	if e.asked[ev.Netns] || !e.Registry.InScope(netnsutil.Inode(ev.Netns)) {
		return
	}
	select {
	case e.nfAsk <- ev.Netns:
		e.asked[ev.Netns] = true
	default: // the attacher is busy: the next event asks again
	}
}

// attachOne attaches the observers of one namespace (actMu held) and
// reports whether they are there.
func (e *Engine) attachOne(ino uint32) bool {
	path, ok := e.Registry.Path(netnsutil.Inode(ino))
	if !ok {
		e.log.Debug("netns of a journey not found (yet); no netfilter observers there", zap.Uint32("netns", ino))
		return false
	}
	ok = e.attach(path, ino, e.Registry.Name(netnsutil.Inode(ino)))
	e.attached.Store(int64(len(e.tr.NetfilterNamespaces())))
	return ok
}

// attach attaches the observers of the netns at path (actMu held); a
// failure is logged.
func (e *Engine) attach(path string, ino uint32, name string) bool {
	if err := e.tr.AttachNetfilter(path, ino); err != nil {
		e.log.Warn("netfilter observers not attached", zap.String("netns", name), zap.Error(err))
		return false
	}
	return true
}

// syncNamespaces detaches the observers of namespaces that are gone and,
// with all, attaches observers to every namespace (actMu held).
func (e *Engine) syncNamespaces(all bool) {
	if err := e.Registry.Refresh(); err != nil {
		e.log.Debug("rescan namespaces", zap.Error(err))
	}
	live := map[uint32]bool{}
	for _, ns := range e.Registry.All() {
		live[uint32(ns.Inode)] = true
		if !all {
			continue
		}
		e.attach(ns.Path, uint32(ns.Inode), ns.Name)
	}
	for _, ino := range e.tr.NetfilterNamespaces() {
		if !live[ino] {
			if err := e.tr.DetachNetfilter(ino); err != nil {
				e.log.Debug("detach observers of a vanished netns", zap.Uint32("netns", ino), zap.Error(err))
			}
		}
	}
	e.attached.Store(int64(len(e.tr.NetfilterNamespaces())))
}

func (e *Engine) attachedText(all bool) string {
	switch {
	case !e.cfg.Netfilter:
		return ""
	case all:
		return fmt.Sprintf(", netfilter observers in %d namespaces", e.attached.Load())
	}
	return ", netfilter observers join each namespace the traced packets reach (--netfilter all: everywhere from the start)"
}

// open installs a session's filter, first attaching the per-packet
// programs if they wait for a session (OnDemand). all: the session wants
// netfilter observers in every namespace now, not as packets arrive.
func (e *Engine) open(f tracer.Filter, all bool) (*session, error) {
	all, err := e.acquire(f, all)
	if err != nil {
		return nil, err
	}
	s, err := e.sess.open(f)
	if err != nil {
		e.release(all)
		return nil, err
	}
	s.all = all
	return s, nil
}

// acquire is one session's claim on the per-packet programs: the first
// attaches them (OnDemand, all or nothing), and the netfilter observers
// join the session's namespaces. It reports whether the session holds a
// claim on observers everywhere (release takes it back).
func (e *Engine) acquire(f tracer.Filter, all bool) (bool, error) {
	e.actMu.Lock()
	defer e.actMu.Unlock()
	if len(e.pathTracepoints) > 0 && e.active == 0 {
		if err := e.tr.AttachTracepoints(e.pathTracepoints...); err != nil {
			return false, fmt.Errorf("%w: %v", ErrEnvironment, err)
		}
		e.attachDeliver()
	}
	e.active++
	all = all && e.cfg.Netfilter
	if all {
		e.wantAll++
		e.syncNamespaces(true)
	} else if e.cfg.Netfilter && f.Netns != 0 {
		e.attachOne(f.Netns) // where the traced packets start (a failure is logged)
	}
	e.nfOpen.Store(true)
	select {
	case e.nfWake <- struct{}{}:
	default:
	}
	return all, nil
}

func (e *Engine) closeSession(s *session) {
	if err := e.sess.close(s); err != nil {
		e.log.Warn("close trace session", zap.Error(err))
	}
	e.release(s.all)
}

// release ends one session's claim on the per-packet programs; the last
// one detaches them (OnDemand) and every netfilter observer.
func (e *Engine) release(all bool) {
	e.actMu.Lock()
	defer e.actMu.Unlock()
	e.active--
	if all {
		e.wantAll--
	}
	if e.active > 0 {
		return
	}
	e.nfOpen.Store(false)
	select {
	case e.nfWake <- struct{}{}:
	default:
	}
	if len(e.pathTracepoints) > 0 {
		if err := e.tr.DetachTracepoints(slices.Concat(e.pathTracepoints, []string{tracer.TPDeliver})...); err != nil {
			e.log.Warn("detach tracepoints", zap.Error(err))
		}
	}
	for _, ino := range e.tr.NetfilterNamespaces() {
		if err := e.tr.DetachNetfilter(ino); err != nil {
			e.log.Warn("detach netfilter observers", zap.Error(err))
		}
	}
	e.nfGen.Add(1)
	e.attached.Store(0)
}

// dispatch hands a finished journey to the sessions (on the processor
// goroutine: it never blocks).
func (e *Engine) dispatch(j *journey.Journey) { e.sess.dispatch(j) }

// Close detaches everything.
func (e *Engine) Close() error { return e.tr.Close() }

// Name names a namespace inode, rescanning on a miss (it may block: not for
// the processor, whose names come from NameNow).
func (e *Engine) Name(ino uint32) string { return e.Registry.Name(netnsutil.Inode(ino)) }

// attachDeliver attaches the socket-read tracepoint, which tells a packet
// reached a local socket without netfilter observers in its namespace.
// Optional: without it (an older kernel) that takes the observers, as
// before; the first failure is logged.
func (e *Engine) attachDeliver() {
	if err := e.tr.AttachTracepoints(tracer.TPDeliver); err != nil && e.deliverErr.CompareAndSwap(false, true) {
		e.log.Warn("socket-read tracepoint unavailable: delivery to a socket is seen only where netfilter observers sit", zap.Error(err))
	}
}
