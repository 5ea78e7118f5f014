package daemon

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

func TestStreamQueueNeverBlocksAndCounts(t *testing.T) {
	q := newQueue[*journey.Journey](2)
	release := make(chan struct{})
	var mu sync.Mutex
	var written int
	ctx, cancel := context.WithCancel(context.Background())
	go q.run(ctx, func(*journey.Journey) {
		<-release // a stalled disk
		mu.Lock()
		written++
		mu.Unlock()
	})
	start := time.Now()
	for i := 0; i < 10; i++ {
		q.put(&journey.Journey{})
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("put blocked for %s behind a stalled writer", d)
	}
	// one is being written, two wait, seven did not fit
	deadline := time.Now().Add(2 * time.Second)
	for q.dropped.Load() < 7 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if got := q.dropped.Load(); got != 7 && got != 8 {
		t.Errorf("dropped %d, want 7 (or 8 if the writer had not taken one yet)", got)
	}
	cancel()
	close(release)
	<-q.done
	mu.Lock()
	defer mu.Unlock()
	if uint64(written)+q.dropped.Load() != 10 {
		t.Errorf("written %d + dropped %d != 10: a journey was lost without being counted", written, q.dropped.Load())
	}
}
