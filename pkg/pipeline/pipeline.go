// Package pipeline is skbtrail's event path: one reader goroutine drains the
// ring buffer into a bounded channel (what does not fit is counted), one
// processor goroutine owns the journey builder, and every finished journey
// goes to the listener. Nothing is lost silently: kernel and channel losses
// reach the builder, which marks the journeys that were open.
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tracer"
)

// Source is what the pipeline reads: the tracer.
type Source interface {
	Run(ctx context.Context, out chan<- journey.Event) error
	Stats() (tracer.Stats, error)
}

// Config configures a pipeline.
type Config struct {
	Source  Source
	Builder journey.Options
	// Buffer is the channel capacity between reader and processor.
	Buffer int
	// Tick is how often open journeys are expired and losses collected
	// (default 50ms).
	Tick time.Duration
	// IdleTick replaces Tick while no journey is open: an idle daemon wakes
	// only to collect losses (default 5s; an event ends idling at once).
	IdleTick time.Duration
	// OnJourney receives each finished journey, on the processor goroutine.
	OnJourney func(*journey.Journey)
	// OnEvent, if set, sees every raw event first (debugging).
	OnEvent func(journey.Event)
	// OnLost, if set, is told how many events were newly lost.
	OnLost func(n uint64)
	Logger *zap.Logger
}

// Pipeline runs the event path.
type Pipeline struct {
	cfg   Config
	b     *journey.Builder
	reqs  chan func(*journey.Builder)
	ready chan struct{}
	// counters: the processor's snapshot of every loss counter, for
	// readers on other goroutines (metrics)
	counters atomic.Pointer[Counters]
}

// Counters are the events that never reached a journey, as of the
// processor's last look (every tick).
type Counters struct {
	tracer.Stats
	Late uint64 // events of journeys already closed
}

// Counters returns the latest snapshot of the loss counters.
func (p *Pipeline) Counters() Counters {
	if c := p.counters.Load(); c != nil {
		return *c
	}
	return Counters{}
}

// New returns a pipeline; Run starts it.
func New(cfg Config) *Pipeline {
	if cfg.Buffer == 0 {
		cfg.Buffer = 16384
	}
	if cfg.IdleTick == 0 {
		cfg.IdleTick = 5 * time.Second
	}
	if cfg.Tick == 0 {
		cfg.Tick = 50 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	return &Pipeline{cfg: cfg, b: journey.NewBuilder(cfg.Builder), reqs: make(chan func(*journey.Builder)), ready: make(chan struct{})}
}

// MonotonicNow is the clock of bpf_ktime_get_ns.
func MonotonicNow() uint64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}

// Do runs fn on the processor goroutine (which owns the builder) and waits.
func (p *Pipeline) Do(ctx context.Context, fn func(*journey.Builder)) error {
	done := make(chan struct{})
	select {
	case p.reqs <- func(b *journey.Builder) { fn(b); close(done) }:
	case <-ctx.Done():
		return ctx.Err()
	}
	<-done
	return nil
}

// CloseWhere closes the open journeys pred selects and delivers them now
// (a trace's timeout ends its own journeys, not others').
func (p *Pipeline) CloseWhere(ctx context.Context, pred func(first journey.Event) bool) error {
	return p.Do(ctx, func(b *journey.Builder) {
		for _, j := range b.CloseWhere(pred) {
			p.cfg.OnJourney(j)
		}
	})
}

// Run reads and processes until ctx ends; then it delivers the journeys
// still open (as they are) and returns.
func (p *Pipeline) Run(ctx context.Context) error {
	events := make(chan journey.Event, p.cfg.Buffer)
	readCtx, stopReader := context.WithCancel(ctx)
	defer stopReader()
	readErr := make(chan error, 1)
	go func() { readErr <- p.cfg.Source.Run(readCtx, events) }()
	tick := time.NewTicker(p.cfg.Tick)
	defer tick.Stop()
	var lostSeen uint64
	collectLost := func() {
		st, err := p.cfg.Source.Stats()
		if err != nil {
			p.cfg.Logger.Warn("read tracer counters", zap.Error(err))
			return
		}
		p.counters.Store(&Counters{Stats: st, Late: p.b.Late})
		if l := st.Lost(); l > lostSeen {
			p.b.AddLost(l - lostSeen)
			if p.cfg.OnLost != nil {
				p.cfg.OnLost(l - lostSeen)
			}
			lostSeen = l
		}
	}
	deliver := func(js []*journey.Journey) {
		for _, j := range js {
			p.cfg.OnJourney(j)
		}
	}
	add := func(ev journey.Event) {
		if p.cfg.OnEvent != nil {
			p.cfg.OnEvent(ev)
		}
		p.b.Add(ev)
		if ev.Journey == 0 {
			// an untracked drop is a finished journey: hand it on now
			// rather than holding it (and every one after it) until the tick
			deliver(p.b.TakeReady())
		}
	}
	drain := func() {
		for {
			select {
			case ev := <-events:
				add(ev)
			default:
				return
			}
		}
	}
	idle := false // ticking at IdleTick
	for {
		select {
		case ev := <-events:
			add(ev)
			if idle && p.b.Open() > 0 {
				idle = false
				tick.Reset(p.cfg.Tick)
			}
		case fn := <-p.reqs:
			// what already arrived belongs to the state the request sees
			drain()
			collectLost()
			fn(p.b)
		case <-tick.C:
			collectLost()
			deliver(p.b.Expire(MonotonicNow()))
			if !idle && p.b.Open() == 0 {
				idle = true
				tick.Reset(p.cfg.IdleTick)
			}
		case err := <-readErr:
			readErr = nil
			if err != nil && !errors.Is(err, context.Canceled) {
				deliver(p.b.Close())
				return fmt.Errorf("event reader: %w", err)
			}
		case <-ctx.Done():
			drain()
			collectLost()
			deliver(p.b.Close())
			return nil
		}
	}
}
