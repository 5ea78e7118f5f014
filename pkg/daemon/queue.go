package daemon

import (
	"context"
	"sync/atomic"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// streamQueueLen bounds the journeys waiting for the event stream.
const streamQueueLen = 4096

// streamQueue hands journeys to the event stream's own goroutine: file I/O
// and pod labelling never run on the processor (a slow disk or container
// runtime must not stall stitching), and what does not fit is counted.
type streamQueue struct {
	ch      chan *journey.Journey
	dropped atomic.Uint64
	done    chan struct{}
}

func newStreamQueue(n int) *streamQueue {
	return &streamQueue{ch: make(chan *journey.Journey, n), done: make(chan struct{})}
}

// put queues j without ever blocking.
func (q *streamQueue) put(j *journey.Journey) {
	select {
	case q.ch <- j:
	default:
		q.dropped.Add(1)
	}
}

// run writes queued journeys until ctx ends, then what is still queued.
func (q *streamQueue) run(ctx context.Context, write func(*journey.Journey)) {
	defer close(q.done)
	for {
		select {
		case j := <-q.ch:
			write(j)
		case <-ctx.Done():
			for {
				select {
				case j := <-q.ch:
					write(j)
				default:
					return
				}
			}
		}
	}
}
