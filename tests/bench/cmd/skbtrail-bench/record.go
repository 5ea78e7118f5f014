package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/trace"
	"github.com/skbtrail/skbtrail/tests/bench"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// cmdRecord traces a SYN to the web ClusterIP in a healthy lab, with the
// listener gone and with node-b's FORWARD policy DROP, and stores every
// event the tracer decoded: the input of BenchmarkStitch.
func cmdRecord(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("record", stderr)
	out := fs.String("out", "tests/bench/"+bench.RecordingFile, "where to write the recording")
	prefix := fs.String("prefix", "", "lab prefix (default: rec + 4 random hex digits)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := requireRoot("skbtrail-bench record"); err != nil {
		return err
	}
	if *prefix == "" {
		*prefix = "rec" + fmt.Sprintf("%04x", time.Now().UnixNano()&0xffff)
	}
	upCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	l, err := lab.Up(upCtx, lab.Config{Prefix: *prefix})
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		if derr := l.Down(); derr != nil {
			err = errors.Join(err, derr)
		}
	}()
	if err := l.Verify(ctx, 5*time.Second); err != nil {
		return err
	}
	names := map[uint32]string{}
	for _, ns := range l.Namespaces() {
		var st syscall.Stat_t
		if err := syscall.Stat(lab.NetnsPath(ns), &st); err != nil {
			return err
		}
		names[uint32(st.Ino)] = ns
	}
	var u unix.Utsname
	_ = unix.Uname(&u)
	recs := bench.Recordings{Recorded: time.Now().UTC().Truncate(time.Second), Kernel: unix.ByteSliceToString(u.Release[:])}
	for _, fault := range []string{"none", "no-listener", "forward-drop"} {
		if fault != "none" {
			if err := l.ApplyFault(fault); err != nil {
				return err
			}
		}
		req := trace.Request{FromNetns: l.PodA, To: l.WebService.Addr(), Probe: true, Timeout: 5 * time.Second, Count: 1}
		rec, err := recordOne(ctx, req, names)
		if err != nil {
			return fmt.Errorf("record %s: %w", fault, err)
		}
		rec.Scenario = fault
		fmt.Fprintf(stdout, "%-13s %4d events, journeys: %v\n", fault, len(rec.Events), rec.Verdicts)
		recs.Recordings = append(recs.Recordings, rec)
	}
	if err := recs.Write(*out); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", *out)
	return nil
}

func recordOne(ctx context.Context, req trace.Request, names map[uint32]string) (bench.Recording, error) {
	var mu sync.Mutex
	var events []journey.Event
	rec := bench.Recording{Trace: fmt.Sprintf("trace --from-netns %s --to %s --probe --count %d", req.FromNetns, req.To, req.Count), Names: map[uint32]string{}}
	ec := trace.EngineConfig{
		Netfilter: true,
		ReplyWait: time.Second,
		OnEvent: func(e journey.Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		},
	}
	_, err := trace.RunRequest(ctx, req, ec, func(string) {}, func(j *journey.Journey) error {
		rec.Verdicts = append(rec.Verdicts, j.Verdict.Kind)
		return nil
	})
	if err != nil {
		return rec, err
	}
	mu.Lock()
	rec.Events = events
	mu.Unlock()
	if len(rec.Events) == 0 {
		return rec, errors.New("no events")
	}
	for _, e := range rec.Events {
		if n, ok := names[e.Netns]; ok {
			rec.Names[e.Netns] = n
		} else if e.Netns != 0 {
			rec.Names[e.Netns] = fmt.Sprintf("ino:%d", e.Netns)
		}
	}
	return rec, nil
}
