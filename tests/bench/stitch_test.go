package bench

import (
	"flag"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

var stitchRate = flag.Float64("stitch.rate", 2e6, "events per second of simulated kernel time BenchmarkStitch replays (sets how many journeys are open at once)")

// tick is how often the pipeline expires journeys (pipeline.Config.Tick).
const tick = 50 * time.Millisecond

// copiesPerPeriod is how many journeys one period of the stream holds
// before it repeats with new ids.
const copiesPerPeriod = 300

func loadRecordings(tb testing.TB) *Recordings {
	tb.Helper()
	r, err := LoadRecordings(RecordingFile)
	if err != nil {
		tb.Fatalf("%v (record it again with `sudo bin/skbtrail-bench record`)", err)
	}
	return r
}

// newBuilder is configured like the engine's: names looked up in a map,
// default grace, idle and open limit, 1s reply wait.
func newBuilder(names map[uint32]string) *journey.Builder {
	reasons := map[uint32]string{2: "NOT_SPECIFIED"}
	return journey.NewBuilder(journey.Options{
		NetnsName: func(ino uint32) string {
			if n, ok := names[ino]; ok {
				return n
			}
			return fmt.Sprintf("ino:%d", ino)
		},
		ReasonName: func(r uint32) string {
			if n, ok := reasons[r]; ok {
				return n
			}
			return fmt.Sprintf("REASON_%d", r)
		},
		ReplyWait: time.Second,
	})
}

// TestRecordingsBuildTheirJourneys checks the recordings and the stream:
// each recording gives the journeys the trace printed when it was
// recorded, the stream's clock never goes back, and the copies of a
// period, followed into the periods their journeys reach, give each of
// those journeys once per copy.
func TestRecordingsBuildTheirJourneys(t *testing.T) {
	recs := loadRecordings(t)
	for _, rec := range recs.Recordings {
		b := newBuilder(rec.Names)
		for _, e := range rec.Events {
			b.Add(e)
		}
		var got []string
		for _, j := range b.Close() {
			got = append(got, j.Verdict.Kind)
		}
		if !slices.Equal(got, rec.Verdicts) {
			t.Errorf("%s: journeys %v, recorded %v", rec.Scenario, got, rec.Verdicts)
		}
	}

	const copies = 30
	s := NewStream(recs.Recordings, copies, 500*time.Nanosecond)
	if s.MaxWrap() == 0 {
		t.Error("no recorded journey outlasts a period: the stream's wrap-around is not tested")
	}
	// run until the journeys of periods 0 and 1 are complete
	perCopy := map[uint64][]journey.Event{}
	var last uint64
	for s.Cycle() <= s.MaxWrap()+1 {
		e := s.Next()
		if e.TimeNs < last {
			t.Fatalf("time goes back: %d after %d", e.TimeNs, last)
		}
		last = e.TimeNs
		if c := s.Copy(e.Journey); c <= 1 {
			perCopy[c] = append(perCopy[c], e)
		}
	}
	want := map[string]int{}
	for k := range copies {
		for _, v := range recs.Recordings[k%len(recs.Recordings)].Verdicts {
			want[v]++
		}
	}
	for c := range uint64(2) {
		b := newBuilder(recs.Names())
		for _, e := range perCopy[c] {
			b.Add(e)
		}
		count := map[string]int{}
		for _, j := range b.Close() {
			count[j.Verdict.Kind]++
		}
		if fmt.Sprint(count) != fmt.Sprint(want) {
			t.Errorf("the copies of period %d gave journeys %v, want %v", c, count, want)
		}
	}

	drops := recs.UntrackedDrops()
	if len(drops) == 0 {
		t.Fatal("no drop event in the recordings")
	}
	b := newBuilder(recs.Names())
	b.Add(drops[0].Events[0])
	if js := b.Expire(0); len(js) != 1 || js[0].Verdict.Kind != journey.Dropped {
		t.Errorf("untracked drop: %d journeys", len(js))
	}
}

// BenchmarkStitch measures the journey builder, the processor goroutine's
// work per event: Add for every event and Expire every 50ms of the stream's
// simulated clock, as the pipeline does (which also takes an untracked
// drop's journey as soon as it is added). One op is one event.
//
//   - lab-journeys: copies of the traced journeys recorded in the lab
//     (a delivered TCP connection to the ClusterIP with its replies, a SYN
//     rejected with RST, a SYN dropped by FORWARD policy; mostly netfilter
//     observer events), arriving at -stitch.rate events/s, so the builder
//     holds as many open journeys as it would at that rate.
//   - drop-monitor: the daemon's always-on path, drops of untracked skbs
//     (one event, one journey, finished at once).
func BenchmarkStitch(b *testing.B) {
	recs := loadRecordings(b)
	names := recs.Names()
	interval := time.Duration(float64(time.Second) / *stitchRate)
	for _, sc := range []struct {
		name string
		recs []Recording
	}{
		{"lab-journeys", recs.Recordings},
		{"drop-monitor", recs.UntrackedDrops()},
	} {
		b.Run(sc.name, func(b *testing.B) {
			s := NewStream(sc.recs, copiesPerPeriod, interval)
			bl := newBuilder(names)
			var next uint64
			maxOpen := 0
			b.ReportAllocs()
			for b.Loop() {
				e := s.Next()
				bl.Add(e)
				if e.Journey == 0 {
					_ = bl.TakeReady() // as the pipeline does for untracked drops
				}
				if e.TimeNs >= next {
					maxOpen = max(maxOpen, bl.Open())
					bl.Expire(e.TimeNs)
					next = e.TimeNs + uint64(tick)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(maxOpen), "max-open")
			// events of journeys closed early (MaxOpen reached)
			b.ReportMetric(float64(bl.Late)/float64(b.N), "late/op")
		})
	}
}
