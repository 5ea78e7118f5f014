// Package events writes the daemon's NDJSON event stream for log shippers:
// one journey per line, rate limited per (netns, reason) with the number
// of suppressed events carried by the next line of the same key, and a file
// that can be reopened (SIGHUP) after logrotate moved it.
package events

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/output"
)

// Limit is a per-key token bucket: Rate events per second, Burst at once.
type Limit struct {
	Rate  float64
	Burst int
}

type bucket struct {
	tokens     float64
	last       time.Time
	suppressed uint64
}

// Stream is the event stream.
type Stream struct {
	mu      sync.Mutex
	path    string // "" or "-": stdout
	f       *os.File
	w       *output.NDJSON
	limit   Limit
	buckets map[[2]string]*bucket
	now     func() time.Time
	// OnSuppressed is told of each suppressed event.
	OnSuppressed func(reason, netns string)
}

// Open opens the stream at path ("-" for stdout), appending.
func Open(path string, limit Limit) (*Stream, error) {
	s := &Stream{path: path, limit: limit, buckets: map[[2]string]*bucket{}, now: time.Now}
	if err := s.Reopen(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reopen reopens the file (after logrotate moved it).
func (s *Stream) Reopen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.path == "" || s.path == "-" {
		s.w = output.NewNDJSON(os.Stdout)
		return nil
	}
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("open event stream: %w", err)
	}
	if s.f != nil {
		s.f.Close()
	}
	s.f, s.w = f, output.NewNDJSON(f)
	return nil
}

// NewWriter streams to w (tests).
func NewWriter(w io.Writer, limit Limit) *Stream {
	return &Stream{w: output.NewNDJSON(w), limit: limit, buckets: map[[2]string]*bucket{}, now: time.Now}
}

// Write writes the journey unless its (netns, reason) is over the limit.
// It reports whether the journey was written.
func (s *Stream) Write(j *journey.Journey) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.limit.Rate > 0 {
		key := [2]string{j.Verdict.Netns, j.Verdict.Reason}
		b := s.buckets[key]
		now := s.now()
		if b == nil {
			b = &bucket{tokens: float64(s.limit.Burst), last: now}
			s.buckets[key] = b
		}
		b.tokens += now.Sub(b.last).Seconds() * s.limit.Rate
		if max := float64(s.limit.Burst); b.tokens > max {
			b.tokens = max
		}
		b.last = now
		if b.tokens < 1 {
			b.suppressed++
			if s.OnSuppressed != nil {
				s.OnSuppressed(j.Verdict.Reason, j.Verdict.Netns)
			}
			return false, nil
		}
		b.tokens--
		j.Suppressed, b.suppressed = b.suppressed, 0
	}
	return true, s.w.Write(j)
}

// Forget drops the rate-limit state of every namespace live does not name
// (it vanished), so the state stays bounded by the namespaces that exist.
func (s *Stream) Forget(live func(netns string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.buckets {
		if !live(k[0]) {
			delete(s.buckets, k)
		}
	}
}

// Close closes the file.
func (s *Stream) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil {
		return s.f.Close()
	}
	return nil
}
