package trace

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tracer"
)

// filterTable is what the sessions need of the kernel filter: a slot that
// makes matching packets start journeys, and freeing it (tracer.Tracer).
type filterTable interface {
	AddFilter(f tracer.Filter) (slot int, err error)
	RemoveFilter(slot int) error
}

// journeyCloser closes the open journeys pred selects and hands them to
// dispatch before it returns (pipeline.Pipeline).
type journeyCloser interface {
	CloseWhere(ctx context.Context, pred func(first journey.Event) bool) error
}

// sessionQueue is how many finished journeys a session holds for its
// consumer; what does not fit is counted (Result.Lost).
const sessionQueue = 256

// closeWait bounds how long a cancelled trace waits for the processor to
// close its open journeys.
const closeWait = time.Second

// sessionsConfig wires a session manager to the kernel side.
type sessionsConfig struct {
	Filters filterTable
	Closer  journeyCloser
	// Done is closed once the pipeline has stopped: it delivered what was
	// open on its way out and no journey comes any more.
	Done <-chan struct{}
	// Queue is each session's queue capacity (default sessionQueue).
	Queue int
	// Observe sees every finished journey first (on the processor).
	Observe func(*journey.Journey)
	// Unclaimed receives the journeys no session asked for.
	Unclaimed func(*journey.Journey)
	// NewTimer starts a session's timeout (default time.NewTimer); tests
	// pass a fake clock.
	NewTimer func(d time.Duration) (c <-chan time.Time, stop func() bool)
}

// sessions are the open traces: each has a kernel filter slot and its own
// bounded queue of the journeys its filter started. dispatch runs on the
// processor goroutine and never blocks; each session's consumer drains its
// queue in wait.
type sessions struct {
	cfg sessionsConfig

	mu     sync.Mutex
	bySlot map[int]*session
}

// session is one open trace.
type session struct {
	slot   int
	filter tracer.Filter
	// all: the session asked for netfilter observers everywhere (the
	// engine's business, remembered for its release).
	all bool
	// out is never closed: dispatch stops sending to a session once close
	// has removed it.
	out      chan *journey.Journey
	overflow atomic.Uint64 // journeys that did not fit out
}

// match reports whether the session's filter started the journey whose
// first event is first (replies, odd ids, are never a start).
func (s *session) match(first journey.Event) bool {
	return first.Journey&1 == 0 && s.filter.Match(first.Pkt, first.Netns)
}

func newSessions(cfg sessionsConfig) *sessions {
	if cfg.Queue <= 0 {
		cfg.Queue = sessionQueue
	}
	if cfg.NewTimer == nil {
		cfg.NewTimer = func(d time.Duration) (<-chan time.Time, func() bool) {
			t := time.NewTimer(d)
			return t.C, t.Stop
		}
	}
	return &sessions{cfg: cfg, bySlot: map[int]*session{}}
}

// open installs f in a free filter slot and registers its session.
func (m *sessions) open(f tracer.Filter) (*session, error) {
	slot, err := m.cfg.Filters.AddFilter(f)
	if err != nil {
		return nil, fmt.Errorf("install trace filter: %w", err)
	}
	s := &session{slot: slot, filter: f, out: make(chan *journey.Journey, m.cfg.Queue)}
	m.mu.Lock()
	m.bySlot[slot] = s
	m.mu.Unlock()
	return s, nil
}

// close unregisters s (no journey reaches it afterwards) and frees its
// filter slot; the slot's error is returned, the session is gone anyway.
func (m *sessions) close(s *session) error {
	m.mu.Lock()
	if m.bySlot[s.slot] == s {
		delete(m.bySlot, s.slot)
	}
	m.mu.Unlock()
	if err := m.cfg.Filters.RemoveFilter(s.slot); err != nil {
		return fmt.Errorf("remove trace filter (slot %d): %w", s.slot, err)
	}
	return nil
}

// dispatch hands a finished journey to every session whose filter started
// it, each its own copy, or to Unclaimed. It runs on the processor
// goroutine: it never blocks, a full session queue counts an overflow.
func (m *sessions) dispatch(j *journey.Journey) {
	if m.cfg.Observe != nil {
		m.cfg.Observe(j)
	}
	var first journey.Event
	switch {
	case len(j.Events) > 0:
		first = j.Events[0]
	case len(j.ReplyEvents) > 0:
		first = j.ReplyEvents[0]
	}
	claimed := false
	m.mu.Lock()
	for _, s := range m.bySlot {
		if j.ID != 0 && s.match(first) {
			claimed = true
			own := j.Clone() // each session diagnoses and labels its own copy
			select {
			case s.out <- own:
			default:
				s.overflow.Add(1)
			}
		}
	}
	m.mu.Unlock()
	if !claimed && m.cfg.Unclaimed != nil {
		m.cfg.Unclaimed(j)
	}
}

// waitSpec says when a session's wait ends and what it does with each
// journey.
type waitSpec struct {
	Timeout time.Duration
	Count   int // stop after this many journeys (0: until the timeout)
	// Handle diagnoses and emits one journey (on the caller's goroutine);
	// an error ends the wait.
	Handle func(*journey.Journey) error
	Log    *zap.Logger
}

// wait hands each journey of s to w.Handle until Count journeys, the
// timeout, ctx's end or the pipeline's end. At the timeout or ctx's end it
// first closes the journeys s started that are still open, so they are
// handled too. Result.Lost is what s's queue could not hold.
func (m *sessions) wait(ctx context.Context, s *session, w waitSpec) (res Result, err error) {
	defer func() { res.Lost = s.overflow.Load() }()
	log := w.Log
	if log == nil {
		log = zap.NewNop()
	}
	timeout, stop := m.cfg.NewTimer(w.Timeout)
	defer stop()
	handle := func(j *journey.Journey) (bool, error) {
		if err := w.Handle(j); err != nil {
			return true, err
		}
		res.Journeys++
		return w.Count > 0 && res.Journeys >= w.Count, nil
	}
	finish := func(cctx context.Context) (Result, error) {
		if cctx != nil {
			// close what this trace started and is still open, then drain
			if err := m.cfg.Closer.CloseWhere(cctx, s.match); err != nil && !errors.Is(err, context.Canceled) {
				log.Warn("closing open journeys", zap.Error(err))
			}
		}
		for {
			select {
			case j := <-s.out:
				if done, err := handle(j); done || err != nil {
					return res, err
				}
			default:
				return res, nil
			}
		}
	}
	for {
		select {
		case j := <-s.out:
			if done, err := handle(j); done || err != nil {
				return res, err
			}
		case <-timeout:
			return finish(ctx)
		case <-m.cfg.Done:
			// the pipeline delivered what was open as it stopped; nobody
			// is left to serve a CloseWhere
			return finish(nil)
		case <-ctx.Done():
			c, cancel := context.WithTimeout(context.Background(), closeWait)
			defer cancel()
			return finish(c)
		}
	}
}
