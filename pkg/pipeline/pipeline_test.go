package pipeline

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tracer"
)

// fakeSource replays events and reports a kernel loss count.
type fakeSource struct {
	events []journey.Event
	lost   uint64
}

func (f *fakeSource) Run(ctx context.Context, out chan<- journey.Event) error {
	for _, e := range f.events {
		select {
		case out <- e:
		case <-ctx.Done():
			return nil
		}
	}
	<-ctx.Done()
	return nil
}

func (f *fakeSource) Stats() (tracer.Stats, error) { return tracer.Stats{RingbufFull: f.lost}, nil }

func ev(j, skb uint64, kind journey.Kind, ns uint32, t uint64) journey.Event {
	tu := journey.Tuple{Proto: journey.ProtoTCP, Src: netip.MustParseAddr("10.0.0.1"), Dst: netip.MustParseAddr("10.0.0.2"), Sport: 1, Dport: 2, TCPFlags: 2}
	return journey.Event{TimeNs: t, Skb: skb, Journey: j, Kind: kind, Netns: ns, Ifname: "eth0", Pkt: tu}
}

func TestPipelineDeliversAndCountsLoss(t *testing.T) {
	now := MonotonicNow()
	src := &fakeSource{lost: 3, events: []journey.Event{
		ev(2, 1, journey.KindTx, 1, now), ev(2, 1, journey.KindDrop, 2, now+1000), // ends: expires after grace
		ev(4, 9, journey.KindTx, 1, now+2000), // stays open: closed by CloseWhere
	}}
	var mu sync.Mutex
	var got []*journey.Journey
	var lost uint64
	p := New(Config{
		Source:    src,
		Builder:   journey.Options{Grace: time.Millisecond, Idle: time.Hour, ReplyWait: time.Millisecond},
		Tick:      5 * time.Millisecond,
		OnJourney: func(j *journey.Journey) { mu.Lock(); got = append(got, j); mu.Unlock() },
		OnLost:    func(n uint64) { lost += n },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(2 * time.Second)
	for {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n == 1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := p.CloseWhere(ctx, func(first journey.Event) bool { return first.Skb == 9 }); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Verdict.Kind != journey.Dropped || got[1].Verdict.Kind != journey.Lost {
		t.Fatalf("journeys %+v", got)
	}
	if lost != 3 || got[0].LostEvents != 3 {
		t.Errorf("lost %d, journey lost_events %d, want 3 and 3", lost, got[0].LostEvents)
	}
}

// The loss counters reach other goroutines as a snapshot: the kernel's and
// the reader's counters and the builder's late events.
func TestCountersSnapshot(t *testing.T) {
	now := MonotonicNow()
	src := &fakeSource{lost: 5, events: []journey.Event{
		ev(2, 1, journey.KindTx, 1, now), ev(2, 1, journey.KindDrop, 2, now+1000),
	}}
	p := New(Config{Source: src, Builder: journey.Options{Grace: time.Millisecond, ReplyWait: time.Millisecond}, Tick: 5 * time.Millisecond,
		OnJourney: func(*journey.Journey) {}})
	if c := p.Counters(); c.RingbufFull != 0 || c.Late != 0 {
		t.Fatalf("counters before the first look: %+v", c)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(2 * time.Second)
	for p.Counters().RingbufFull != 5 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	// an event of the journey that has closed since arrives late
	if err := p.Do(ctx, func(b *journey.Builder) {
		for len(b.Expire(MonotonicNow())) == 0 && b.Open() > 0 {
			time.Sleep(time.Millisecond)
		}
		b.Add(ev(2, 1, journey.KindConsume, 2, now+3000))
	}); err != nil {
		t.Fatal(err)
	}
	for p.Counters().Late != 1 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if c := p.Counters(); c.RingbufFull != 5 || c.Late != 1 || c.Lost() != 5 {
		t.Errorf("counters %+v, want ringbuf 5, late 1", c)
	}
}
