package trace

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/pipeline"
	"github.com/skbtrail/skbtrail/tracer"
)

// The session manager without a kernel: a fake kernel (filter table and
// event source) feeds the real pipeline, whose journeys the sessions
// dispatch, as in the engine.

// testWait bounds every wait for something that must happen: reaching it
// means a hang (a blocked processor, a wait that never returns).
const testWait = 10 * time.Second

// fakeKernel is the kernel side of the traces: a filter table and an event
// source. A packet starts a journey only when an installed filter matches
// it where it is first seen, as the BPF programs decide; an unmatched
// packet that is dropped reaches user space as an untracked drop (the drop
// monitor); other unmatched packets are not seen at all.
type fakeKernel struct {
	mu      sync.Mutex
	filters map[int]tracer.Filter
	removed int
	nextID  uint64

	packets chan []journey.Event
	sent    chan struct{}
}

func newFakeKernel() *fakeKernel {
	return &fakeKernel{filters: map[int]tracer.Filter{}, packets: make(chan []journey.Event), sent: make(chan struct{})}
}

func (k *fakeKernel) AddFilter(f tracer.Filter) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for slot := 0; slot < tracer.MaxFilters; slot++ {
		if _, used := k.filters[slot]; !used {
			k.filters[slot] = f
			return slot, nil
		}
	}
	return -1, tracer.ErrNoFilterSlot
}

func (k *fakeKernel) RemoveFilter(slot int) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, used := k.filters[slot]; !used {
		return fmt.Errorf("filter slot %d is not in use", slot)
	}
	delete(k.filters, slot)
	k.removed++
	return nil
}

func (k *fakeKernel) inUse() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.filters)
}

// track turns one packet's events into what user space gets.
func (k *fakeKernel) track(pkt []journey.Event) []journey.Event {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, f := range k.filters {
		if f.Match(pkt[0].Pkt, pkt[0].Netns) {
			k.nextID += 2
			out := slices.Clone(pkt)
			for i := range out {
				out[i].Journey = k.nextID
			}
			return out
		}
	}
	if last := pkt[len(pkt)-1]; last.Kind == journey.KindDrop {
		last.Journey = 0
		return []journey.Event{last}
	}
	return nil
}

func (k *fakeKernel) Run(ctx context.Context, out chan<- journey.Event) error {
	for {
		var pkt []journey.Event
		select {
		case <-ctx.Done():
			return nil
		case pkt = <-k.packets:
		}
		for _, ev := range k.track(pkt) {
			select {
			case out <- ev:
			case <-ctx.Done():
				return nil
			}
		}
		select {
		case k.sent <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
	}
}

func (k *fakeKernel) Stats() (tracer.Stats, error) { return tracer.Stats{}, nil }

// harness wires the fake kernel, a pipeline and a session manager as
// NewEngine wires the tracer, its pipeline and the sessions.
type harness struct {
	t    *testing.T
	k    *fakeKernel
	m    *sessions
	pipe *pipeline.Pipeline
	// fire, closed, makes every session's timeout expire (a fake clock)
	fire   chan time.Time
	stop   context.CancelFunc // stops the pipeline
	done   chan struct{}      // closed when the pipeline has stopped
	runErr error

	mu        sync.Mutex
	observed  []*journey.Journey
	unclaimed []*journey.Journey
	timeouts  []time.Duration
}

// knownNetns are the namespaces the fake node has; others have vanished.
var knownNetns = map[uint32]string{1: "host", 7: "lab-pod-a"}

func newHarness(t *testing.T, queue int) *harness {
	h := &harness{t: t, k: newFakeKernel(), fire: make(chan time.Time), done: make(chan struct{})}
	h.pipe = pipeline.New(pipeline.Config{
		Source: h.k,
		// nothing expires while a test runs: journeys close when a
		// session (or the test) closes them, or the pipeline stops
		Builder: journey.Options{
			Grace: time.Hour, Idle: time.Hour, ReplyWait: time.Hour,
			NetnsName: func(ino uint32) string {
				if n, ok := knownNetns[ino]; ok {
					return n
				}
				return fmt.Sprintf("ino:%d", ino)
			},
		},
		OnJourney: func(j *journey.Journey) { h.m.dispatch(j) },
	})
	h.m = newSessions(sessionsConfig{
		Filters: h.k,
		Closer:  h.pipe,
		Done:    h.done,
		Queue:   queue,
		Observe: func(j *journey.Journey) {
			h.mu.Lock()
			h.observed = append(h.observed, j)
			h.mu.Unlock()
		},
		Unclaimed: func(j *journey.Journey) {
			h.mu.Lock()
			h.unclaimed = append(h.unclaimed, j)
			h.mu.Unlock()
		},
		NewTimer: func(d time.Duration) (<-chan time.Time, func() bool) {
			h.mu.Lock()
			h.timeouts = append(h.timeouts, d)
			h.mu.Unlock()
			return h.fire, func() bool { return true }
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() {
		h.runErr = h.pipe.Run(ctx)
		close(h.done)
	}()
	t.Cleanup(func() {
		h.stop()
		await(t, h.done, "pipeline stop")
		if h.runErr != nil {
			t.Errorf("pipeline: %v", h.runErr)
		}
	})
	return h
}

// send hands packets to the kernel; it returns once their events are in
// the pipeline's channel, so the next CloseWhere sees them.
func (h *harness) send(pkts ...[]journey.Event) {
	h.t.Helper()
	for _, p := range pkts {
		select {
		case h.k.packets <- p:
		case <-time.After(testWait):
			h.t.Fatal("the fake kernel does not take packets")
		}
		await(h.t, h.k.sent, "packet sent")
	}
}

// closeJourneys closes the open journeys of the given skbs, as a trace's
// timeout would, and fails if the processor does not come back.
func (h *harness) closeJourneys(skbs ...uint64) {
	h.t.Helper()
	errc := make(chan error, 1)
	go func() {
		errc <- h.pipe.CloseWhere(context.Background(), func(first journey.Event) bool { return slices.Contains(skbs, first.Skb) })
	}()
	if err := await(h.t, errc, "CloseWhere (a blocked processor?)"); err != nil {
		h.t.Fatal(err)
	}
}

// tracing is a session whose wait runs on its own goroutine, collecting
// what it hands on.
type tracing struct {
	s       *session
	emitted chan *journey.Journey // every journey handled, in order
	res     chan traceResult
}

type traceResult struct {
	Result
	err error
}

// trace opens a session with filter f and starts its wait (timeout 3s on
// the fake clock, count as Options.Count); the session closes when the
// wait ends.
func (h *harness) trace(ctx context.Context, f tracer.Filter, count int) *tracing {
	h.t.Helper()
	s, err := h.m.open(f)
	if err != nil {
		h.t.Fatal(err)
	}
	tr := &tracing{s: s, emitted: make(chan *journey.Journey, 64), res: make(chan traceResult, 1)}
	go func() {
		res, err := h.m.wait(ctx, s, waitSpec{Timeout: 3 * time.Second, Count: count, Handle: func(j *journey.Journey) error {
			tr.emitted <- j
			return nil
		}})
		if cerr := h.m.close(s); cerr != nil && err == nil {
			err = cerr
		}
		tr.res <- traceResult{res, err}
	}()
	return tr
}

// result waits for the trace's end and returns the skbs of what it handed on.
func (tr *tracing) result(t *testing.T) (Result, []uint64) {
	t.Helper()
	r := await(t, tr.res, "trace result")
	if r.err != nil {
		t.Fatalf("trace: %v", r.err)
	}
	close(tr.emitted)
	var skbs []uint64
	for j := range tr.emitted {
		skbs = append(skbs, j.Events[0].Skb)
	}
	slices.Sort(skbs)
	return r.Result, skbs
}

func await[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(testWait):
		t.Fatalf("%s: nothing after %s", what, testWait)
		panic("unreachable")
	}
}

// packet is one skb's events: a packet of proto to dport, first seen in
// netns, then one event per kind.
func packet(skb uint64, netns uint32, proto uint8, dport uint16, kinds ...journey.Kind) []journey.Event {
	tu := journey.Tuple{Proto: proto, Src: netip.MustParseAddr("10.244.1.2"), Dst: netip.MustParseAddr("10.244.2.3"), Sport: 40000, Dport: dport}
	if proto == journey.ProtoTCP {
		tu.TCPFlags = 0x02
	}
	now := pipeline.MonotonicNow()
	evs := make([]journey.Event, len(kinds))
	for i, k := range kinds {
		evs[i] = journey.Event{TimeNs: now + uint64(i)*1000, Skb: skb, Kind: k, Netns: netns, Ifname: "eth0", Pkt: tu}
	}
	return evs
}

var (
	tcp80  = tracer.Filter{Proto: journey.ProtoTCP, Dport: 80}
	udp53  = tracer.Filter{Proto: journey.ProtoUDP, Dport: 53}
	inPodA = tracer.Filter{Netns: 7}
)

// Concurrent sessions each get the journeys their own filter started (a
// journey two filters started goes to both, each its own copy); what no
// session started goes to Unclaimed; a session's timeout closes its own
// open journeys, not others'.
func TestSessionsConcurrent(t *testing.T) {
	h := newHarness(t, 0)
	ctx := context.Background()
	a := h.trace(ctx, tcp80, 0)
	b := h.trace(ctx, udp53, 0)
	c := h.trace(ctx, inPodA, 0)
	h.send(
		packet(1, 1, journey.ProtoTCP, 80, journey.KindTx, journey.KindRx),   // a
		packet(2, 1, journey.ProtoUDP, 53, journey.KindTx, journey.KindDrop), // b
		packet(3, 7, journey.ProtoTCP, 80, journey.KindTx),                   // a and c
		packet(4, 1, journey.ProtoICMP, 0, journey.KindDrop),                 // nobody's: the drop monitor
		packet(5, 1, journey.ProtoUDP, 123, journey.KindTx),                  // nobody's, not dropped: unseen
	)
	close(h.fire)
	want := map[string]struct {
		tr   *tracing
		skbs []uint64
	}{"tcp/80": {a, []uint64{1, 3}}, "udp/53": {b, []uint64{2}}, "pod a": {c, []uint64{3}}}
	got := map[string][]*journey.Journey{}
	for name, w := range want {
		r := await(t, w.tr.res, name)
		if r.err != nil {
			t.Fatalf("%s: %v", name, r.err)
		}
		close(w.tr.emitted)
		var skbs []uint64
		for j := range w.tr.emitted {
			skbs = append(skbs, j.Events[0].Skb)
			got[name] = append(got[name], j)
		}
		slices.Sort(skbs)
		if !slices.Equal(skbs, w.skbs) || r.Journeys != len(w.skbs) || r.Lost != 0 {
			t.Errorf("%s: journeys of skbs %v (result %+v), want %v", name, skbs, r.Result, w.skbs)
		}
	}
	var fromA, fromC *journey.Journey
	for _, j := range got["tcp/80"] {
		if j.Events[0].Skb == 3 {
			fromA = j
		}
	}
	if len(got["pod a"]) == 1 {
		fromC = got["pod a"][0]
	}
	if fromA == nil || fromC == nil || fromA == fromC || &fromA.Hops[0] == &fromC.Hops[0] {
		t.Errorf("the journey two sessions started is not a copy of each's own: %p %p", fromA, fromC)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.unclaimed) != 1 || h.unclaimed[0].Events[0].Skb != 4 || h.unclaimed[0].Verdict.Kind != journey.Dropped {
		t.Errorf("unclaimed %v, want the drop of skb 4", h.unclaimed)
	}
	if len(h.observed) != 4 {
		t.Errorf("observed %d journeys, want 4 (3 traced, 1 drop)", len(h.observed))
	}
	if n := h.k.inUse(); n != 0 {
		t.Errorf("%d filter slots still in use after every session closed", n)
	}
}

// A trace that times out with no journey reports none, frees its filter
// slot, and leaves the open journeys of other traces alone.
func TestSessionTimeoutNoJourney(t *testing.T) {
	h := newHarness(t, 0)
	other, err := h.m.open(udp53)
	if err != nil {
		t.Fatal(err)
	}
	tr := h.trace(context.Background(), tcp80, 0)
	h.send(packet(1, 1, journey.ProtoUDP, 53, journey.KindTx)) // other's, still open
	close(h.fire)
	res, skbs := tr.result(t)
	if res.Journeys != 0 || res.Lost != 0 || len(skbs) != 0 {
		t.Errorf("result %+v, journeys of skbs %v; want none", res, skbs)
	}
	if n := len(other.out); n != 0 {
		t.Errorf("a timeout closed %d journeys of another session", n)
	}
	h.closeJourneys(1)
	if n := len(other.out); n != 1 {
		t.Errorf("the other session has %d journeys, want its 1", n)
	}
	if err := h.m.close(other); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !slices.Equal(h.timeouts, []time.Duration{3 * time.Second}) {
		t.Errorf("timers %v, want the trace's timeout once", h.timeouts)
	}
	if h.k.inUse() != 0 || h.k.removed != 2 {
		t.Errorf("filter slots in use %d, removed %d; want 0 and 2", h.k.inUse(), h.k.removed)
	}
}

// Count ends a trace as soon as it is reached, without waiting for the
// timeout.
func TestSessionCount(t *testing.T) {
	h := newHarness(t, 0)
	tr := h.trace(context.Background(), tcp80, 2)
	h.send(
		packet(1, 1, journey.ProtoTCP, 80, journey.KindTx),
		packet(2, 1, journey.ProtoTCP, 80, journey.KindTx),
		packet(3, 1, journey.ProtoTCP, 80, journey.KindTx),
	)
	h.closeJourneys(1, 2, 3) // the timer never fires
	res, skbs := tr.result(t)
	if res.Journeys != 2 || len(skbs) != 2 {
		t.Errorf("result %+v, journeys of skbs %v; want 2", res, skbs)
	}
}

// Cancelling a trace's context ends it; the journeys it started and that
// were still open are closed and handed on first.
func TestSessionCancel(t *testing.T) {
	h := newHarness(t, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := h.trace(ctx, tcp80, 0)
	h.send(
		packet(1, 1, journey.ProtoTCP, 80, journey.KindTx, journey.KindDrop),
		packet(2, 1, journey.ProtoTCP, 80, journey.KindTx),
	)
	h.closeJourneys(1)
	first := await(t, tr.emitted, "first journey")
	if first.Events[0].Skb != 1 {
		t.Fatalf("first journey of skb %d, want 1", first.Events[0].Skb)
	}
	cancel() // mid-trace: skb 2's journey is open
	r := await(t, tr.res, "trace result")
	if r.err != nil || r.Journeys != 2 {
		t.Fatalf("result %+v, %v; want 2 journeys, no error", r.Result, r.err)
	}
	if last := await(t, tr.emitted, "second journey"); last.Events[0].Skb != 2 {
		t.Errorf("second journey of skb %d, want 2", last.Events[0].Skb)
	}
}

// A trace whose pipeline stops (the engine's Run returned) gets what the
// pipeline delivered on its way out and ends; it does not wait for a
// processor that is gone.
func TestSessionPipelineStops(t *testing.T) {
	h := newHarness(t, 0)
	tr := h.trace(context.Background(), tcp80, 0)
	h.send(packet(1, 1, journey.ProtoTCP, 80, journey.KindTx))
	h.stop()
	res, skbs := tr.result(t)
	if res.Journeys != 1 || !slices.Equal(skbs, []uint64{1}) {
		t.Errorf("result %+v, journeys of skbs %v; want skb 1's", res, skbs)
	}
}

// A consumer that does not keep up loses journeys, counted, and never
// holds up the processor.
func TestSessionSlowConsumer(t *testing.T) {
	h := newHarness(t, 2)
	s, err := h.m.open(udp53)
	if err != nil {
		t.Fatal(err)
	}
	for skb := uint64(1); skb <= 6; skb++ {
		h.send(packet(skb, 1, journey.ProtoUDP, 53, journey.KindTx))
	}
	// nobody reads the session's queue yet: it fills, the rest is counted
	h.closeJourneys(1, 2, 3, 4, 5, 6)
	// the processor is free: a journey of nobody's still goes through
	h.send(packet(99, 1, journey.ProtoICMP, 0, journey.KindDrop))
	h.closeJourneys()
	close(h.fire)
	var handled []uint64
	res, err := h.m.wait(context.Background(), s, waitSpec{Timeout: time.Second, Handle: func(j *journey.Journey) error {
		handled = append(handled, j.Events[0].Skb)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := h.m.close(s); err != nil {
		t.Fatal(err)
	}
	if res.Journeys != 2 || res.Lost != 4 || !slices.Equal(handled, []uint64{1, 2}) {
		t.Errorf("result %+v, handled skbs %v; want skbs 1 and 2, 4 lost", res, handled)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.unclaimed) != 1 || h.unclaimed[0].Events[0].Skb != 99 {
		t.Errorf("unclaimed %v, want the drop of skb 99", h.unclaimed)
	}
}

// A journey whose namespace vanished before it was named is still handed to
// the trace that asked for that namespace, under the name "ino:N".
func TestSessionVanishedNetns(t *testing.T) {
	h := newHarness(t, 0)
	s, err := h.m.open(tracer.Filter{Netns: 4242}) // resolved while the namespace existed
	if err != nil {
		t.Fatal(err)
	}
	h.send(packet(1, 4242, journey.ProtoTCP, 80, journey.KindTx, journey.KindDrop))
	close(h.fire)
	var got []*journey.Journey
	res, err := h.m.wait(context.Background(), s, waitSpec{Timeout: time.Second, Handle: func(j *journey.Journey) error {
		// what the engine's Diagnose does first: a registry rescan that
		// does not find the namespace any more
		j.ResolveNames(func(ino uint32) string {
			if n, ok := knownNetns[ino]; ok {
				return n
			}
			return fmt.Sprintf("ino:%d", ino)
		})
		got = append(got, j)
		return nil
	}})
	if cerr := h.m.close(s); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil || res.Journeys != 1 || len(got) != 1 {
		t.Fatalf("result %+v, %v, %d journeys; want 1", res, err, len(got))
	}
	j := got[0]
	if j.Names[4242] != "ino:4242" || j.Verdict.Netns != "ino:4242" || j.Verdict.Kind != journey.Dropped || len(j.Hops) == 0 || j.Hops[0].Netns != "ino:4242" {
		t.Errorf("journey names %v, verdict %+v, hops %+v; want the drop in ino:4242", j.Names, j.Verdict, j.Hops)
	}
}

// Sessions open and close while the processor dispatches: no journey
// reaches a session after its close returned, and every journey is
// accounted for once (queued, lost to a full queue, or unclaimed).
func TestSessionCloseWhileDispatching(t *testing.T) {
	var unclaimed int
	m := newSessions(sessionsConfig{Filters: newFakeKernel(), Queue: 4, Unclaimed: func(*journey.Journey) { unclaimed++ }})
	tcp := packet(1, 1, journey.ProtoTCP, 80, journey.KindTx)[0]
	const total = 20000
	progress := make(chan struct{}, 1)
	dispatched := make(chan struct{})
	go func() { // the processor
		defer close(dispatched)
		for i := uint64(1); i <= total; i++ {
			ev := tcp
			ev.Journey, ev.Skb = 2*i, i
			m.dispatch(&journey.Journey{ID: 2 * i, Events: []journey.Event{ev}, Hops: []journey.Hop{{Netns: "host"}}})
			select {
			case progress <- struct{}{}:
			default:
			}
		}
	}()
	type closed struct {
		s      *session
		queued int
	}
	var sessions []closed
	for running := true; running; {
		s, err := m.open(tcp80)
		if err != nil {
			t.Fatal(err)
		}
		select { // at least one dispatch while it is open, unless all are done
		case <-progress:
		case <-dispatched:
			running = false
		}
		if err := m.close(s); err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, closed{s, len(s.out)})
	}
	<-dispatched
	n := unclaimed
	for _, c := range sessions {
		if q := len(c.s.out); q != c.queued {
			t.Fatalf("a session got %d journeys after its close", q-c.queued)
		}
		n += c.queued + int(c.s.overflow.Load())
	}
	if n != total {
		t.Errorf("%d journeys accounted for (%d sessions), want %d", n, len(sessions), total)
	}
}

// Opening fails when every filter slot is taken, and leaves nothing
// behind; closing frees a slot for the next trace.
func TestSessionOpenFull(t *testing.T) {
	k := newFakeKernel()
	m := newSessions(sessionsConfig{Filters: k})
	var open []*session
	for range tracer.MaxFilters {
		s, err := m.open(tcp80)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
	}
	if _, err := m.open(udp53); !errors.Is(err, tracer.ErrNoFilterSlot) {
		t.Fatalf("open with every slot taken: %v, want ErrNoFilterSlot", err)
	}
	if len(m.bySlot) != tracer.MaxFilters {
		t.Errorf("%d sessions registered, want %d", len(m.bySlot), tracer.MaxFilters)
	}
	if err := m.close(open[3]); err != nil {
		t.Fatal(err)
	}
	s, err := m.open(udp53)
	if err != nil {
		t.Fatalf("open after a close: %v", err)
	}
	if s.slot != open[3].slot {
		t.Errorf("slot %d, want the freed %d", s.slot, open[3].slot)
	}
	// a slot the kernel side lost: close says so, the session is gone anyway
	if err := k.RemoveFilter(s.slot); err != nil {
		t.Fatal(err)
	}
	if err := m.close(s); err == nil {
		t.Error("close of a slot not in use: no error")
	}
	if _, ok := m.bySlot[s.slot]; ok {
		t.Error("a session whose slot could not be freed is still registered")
	}
}

// An error from the consumer (a client gone) ends the trace with it.
func TestSessionHandleError(t *testing.T) {
	h := newHarness(t, 0)
	s, err := h.m.open(tcp80)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := h.m.close(s); err != nil {
			t.Error(err)
		}
	}()
	h.send(packet(1, 1, journey.ProtoTCP, 80, journey.KindTx), packet(2, 1, journey.ProtoTCP, 80, journey.KindTx))
	h.closeJourneys(1, 2)
	gone := errors.New("client gone")
	calls := 0
	res, err := h.m.wait(context.Background(), s, waitSpec{Timeout: time.Second, Handle: func(*journey.Journey) error {
		calls++
		return gone
	}})
	if !errors.Is(err, gone) || res.Journeys != 0 || calls != 1 {
		t.Errorf("result %+v, %v after %d calls; want the client's error after 1", res, err, calls)
	}
}
