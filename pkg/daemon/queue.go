package daemon

import (
	"context"
	"sync/atomic"
)

// Queue lengths: what may wait for the event stream's writer and for the
// metrics counter.
const (
	streamQueueLen  = 4096
	metricsQueueLen = 4096
)

// queue hands work to a consumer's own goroutine: file I/O, pod labelling
// and name lookups never run on the processor (a slow disk or container
// runtime must not stall stitching), and what does not fit is counted.
type queue[T any] struct {
	ch      chan T
	dropped atomic.Uint64
	done    chan struct{}
}

func newQueue[T any](n int) *queue[T] {
	return &queue[T]{ch: make(chan T, n), done: make(chan struct{})}
}

// put queues v without ever blocking.
func (q *queue[T]) put(v T) {
	select {
	case q.ch <- v:
	default:
		q.dropped.Add(1)
	}
}

// run hands queued values to consume until ctx ends, then what is still
// queued.
func (q *queue[T]) run(ctx context.Context, consume func(T)) {
	defer close(q.done)
	for {
		select {
		case v := <-q.ch:
			consume(v)
		case <-ctx.Done():
			for {
				select {
				case v := <-q.ch:
					consume(v)
				default:
					return
				}
			}
		}
	}
}
