package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
	"time"
)

const sampleBench = `goos: linux
pkg: github.com/skbtrail/skbtrail/tracer
BenchmarkDecode 	29183608	        40.00 ns/op	2712.71 MB/s	      16 B/op	       1 allocs/op
PASS
pkg: github.com/skbtrail/skbtrail/tests/bench
BenchmarkStitch/lab-journeys-2         	 4008280	       210.0 ns/op	   3512072 events/s	       653 B/op	       0 allocs/op
BenchmarkStitch/drop-monitor         	 1000000	      1160 ns/op	    854128 events/s	      1140 B/op	       9 allocs/op
ok  	github.com/skbtrail/skbtrail/tests/bench	2.465s
`

func TestParseBench(t *testing.T) {
	lines, err := parseBench(strings.NewReader(sampleBench))
	if err != nil {
		t.Fatal(err)
	}
	if len(lines) != 3 {
		t.Fatalf("%d lines: %+v", len(lines), lines)
	}
	if l := lines[1]; l.name != "BenchmarkStitch/lab-journeys" || l.pkg != "github.com/skbtrail/skbtrail/tests/bench" || l.n != 4008280 ||
		l.metrics["ns/op"] != 210 || l.metrics["events/s"] != 3512072 || l.metrics["allocs/op"] != 0 {
		t.Errorf("parsed %+v", l)
	}
}

func TestMicroTable(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "bench")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(sampleBench)
	f.Close()
	var out, errOut bytes.Buffer
	err = cmdMicro([]string{f.Name()}, &out, &errOut)
	if err != errMissed {
		t.Errorf("err %v, want errMissed (drop-monitor: 1200 ns/event)", err)
	}
	s := out.String()
	// 40 + 210 ns = 4M events/s; 40 + 1160 ns = 0.83M events/s
	for _, want := range []string{"| tests/bench BenchmarkStitch/lab-journeys |", "4.00M", "0.83M", "MISSED", "OK"} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
}

func TestProcessCPU(t *testing.T) {
	// burn CPU until our own counter moves (it counts 10ms ticks)
	deadline := time.Now().Add(5 * time.Second)
	x := 0
	for processCPU(os.Getpid()) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no CPU time read for this process")
		}
		for i := range 1_000_000 {
			x += i
		}
	}
	_ = x
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median %v", m)
	}
}

func TestMedianRuns(t *testing.T) {
	in := sampleBench + `pkg: github.com/skbtrail/skbtrail/tracer
BenchmarkDecode 	29183608	        60.00 ns/op	2712.71 MB/s	      16 B/op	       1 allocs/op
BenchmarkDecode 	29183608	        45.00 ns/op	2712.71 MB/s	      16 B/op	       1 allocs/op
`
	lines, err := parseBench(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	m := medianRuns(lines)
	if len(m) != 3 {
		t.Fatalf("%d merged lines: %+v", len(m), m)
	}
	if d := m[0]; d.name != "BenchmarkDecode" || d.n != 3 || d.metrics["ns/op"] != 45 {
		t.Errorf("merged decode %+v, want 3 runs, median 45 ns/op", d)
	}
}
