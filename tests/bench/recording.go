package bench

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// RecordingFile is where `skbtrail-bench record` writes and BenchmarkStitch
// reads the recorded events, relative to this package: gzipped JSON
// (`zcat` it to read it).
const RecordingFile = "testdata/recorded.json.gz"

// Recording is everything the tracer reported during one trace in the lab:
// the events exactly as tracer.Decode produced them, and the names of the
// namespaces they mention.
type Recording struct {
	Scenario string            `json:"scenario"` // lab fault ("none": healthy)
	Trace    string            `json:"trace"`    // the trace request, for the reader
	Verdicts []string          `json:"verdicts"` // verdicts of the journeys the trace printed
	Names    map[uint32]string `json:"names"`    // netns inode -> name
	Events   []journey.Event   `json:"events"`
}

// Recordings is the content of RecordingFile.
type Recordings struct {
	Recorded   time.Time   `json:"recorded"`
	Kernel     string      `json:"kernel"`
	Recordings []Recording `json:"recordings"`
}

// LoadRecordings reads a file written by Recordings.Write.
func LoadRecordings(path string) (*Recordings, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var r Recordings
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(r.Recordings) == 0 {
		return nil, fmt.Errorf("%s: no recordings", path)
	}
	for _, rec := range r.Recordings {
		if len(rec.Events) == 0 {
			return nil, fmt.Errorf("%s: recording %q has no events", path, rec.Scenario)
		}
	}
	return &r, nil
}

// Write stores the recordings as gzipped JSON.
func (r *Recordings) Write(path string) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := zw.Write(append(b, '\n')); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// Names merges the namespace names of all recordings.
func (r *Recordings) Names() map[uint32]string {
	names := map[uint32]string{}
	for _, rec := range r.Recordings {
		for ino, n := range rec.Names {
			names[ino] = n
		}
	}
	return names
}

// UntrackedDrops returns one recording per recorded drop event, turned into
// what the always-on drop monitor reports: a drop of an skb no trace
// follows (journey id 0), which the builder finishes at once.
func (r *Recordings) UntrackedDrops() []Recording {
	var out []Recording
	for _, rec := range r.Recordings {
		for _, e := range rec.Events {
			if e.Kind == journey.KindDrop {
				e.Journey = 0
				out = append(out, Recording{Scenario: rec.Scenario + "/drop", Names: rec.Names, Events: []journey.Event{e}})
			}
		}
	}
	return out
}

// Stream replays recordings as an endless event stream at a fixed rate, the
// way the tracer's ring buffer would hand them over when that many packets
// were traced: copies of the recorded journeys, each with its own journey
// ids and skb addresses, started one after the other so that on average
// one event arrives per interval, and interleaved by time.
//
// The copies of one period repeat with new ids and later times. A journey
// that lasts longer than a period (a retransmission a second later, a
// connection's FIN) goes on during the following periods, so the stream is
// in a steady state: time never goes back and as many journeys are open as
// would be at that rate.
type Stream struct {
	period  []streamEvent // one period of the stream, by time within the period
	span    uint64        // simulated ns a period covers
	idSpan  uint64        // journey ids a period uses
	skbSpan uint64        // skb addresses a period uses
	maxWrap uint64
	i       int
	cycle   uint64
}

type streamEvent struct {
	journey.Event        // TimeNs: offset within the period
	wrap          uint64 // how many periods after its journey's start the event comes
}

// NewStream builds a stream of copies journeys per period (the recordings
// taken in turn) with one event per interval on average.
func NewStream(recs []Recording, copies int, interval time.Duration) *Stream {
	s := &Stream{}
	var start uint64
	var nextID, nextSkb uint64 = 2, 1 // journey ids keep bit 0 free for the direction
	var evs []journey.Event
	for k := range copies {
		rec := recs[k%len(recs)]
		t0 := rec.Events[0].TimeNs
		for _, e := range rec.Events {
			t0 = min(t0, e.TimeNs)
		}
		ids, skbs := map[uint64]uint64{}, map[uint64]uint64{}
		for _, e := range rec.Events {
			if e.Journey != 0 {
				id, ok := ids[e.Journey&^1]
				if !ok {
					id, nextID = nextID, nextID+2
					ids[e.Journey&^1] = id
				}
				e.Journey = id | e.Journey&1
			}
			skb, ok := skbs[e.Skb]
			if !ok {
				skb, nextSkb = nextSkb<<8, nextSkb+1 // aligned like kernel pointers
				skbs[e.Skb] = skb
			}
			e.Skb = skb
			e.TimeNs = start + (e.TimeNs - t0)
			evs = append(evs, e)
		}
		start += uint64(len(rec.Events)) * uint64(interval)
	}
	s.span, s.idSpan, s.skbSpan = max(start, 1), nextID, nextSkb<<8
	for _, e := range evs {
		w := e.TimeNs / s.span
		e.TimeNs %= s.span
		s.period = append(s.period, streamEvent{Event: e, wrap: w})
		s.maxWrap = max(s.maxWrap, w)
	}
	slices.SortStableFunc(s.period, func(a, b streamEvent) int {
		switch {
		case a.TimeNs < b.TimeNs:
			return -1
		case a.TimeNs > b.TimeNs:
			return 1
		}
		return 0
	})
	return s
}

// Len is the number of events of one period.
func (s *Stream) Len() int { return len(s.period) }

// Cycle is the number of the period the next event belongs to.
func (s *Stream) Cycle() uint64 { return s.cycle }

// MaxWrap is how many periods the longest journey reaches beyond the one
// it started in.
func (s *Stream) MaxWrap() uint64 { return s.maxWrap }

// Copy tells which period's copies a journey id of the stream belongs to.
func (s *Stream) Copy(journeyID uint64) uint64 { return journeyID / s.idSpan }

// Next returns the next event. The first periods leave out the events of
// journeys that would have started before the stream did.
func (s *Stream) Next() journey.Event {
	for {
		se := &s.period[s.i]
		cycle := s.cycle
		if s.i++; s.i == len(s.period) {
			s.i = 0
			s.cycle++
		}
		if cycle < se.wrap {
			continue
		}
		e := se.Event
		c := cycle - se.wrap // the period its journey started in
		e.TimeNs += cycle * s.span
		e.Skb += c * s.skbSpan
		if e.Journey != 0 {
			e.Journey += c * s.idSpan
		}
		return e
	}
}
