package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// eventsTarget is issue 6's target for decode + stitch on one core.
const eventsTarget = 2_000_000

// benchLine is one result line of `go test -bench`.
type benchLine struct {
	pkg     string
	name    string // without the -GOMAXPROCS suffix
	n       int64
	metrics map[string]float64 // unit -> value
}

var procsSuffix = regexp.MustCompile(`-\d+$`)

func parseBench(r io.Reader) ([]benchLine, error) {
	var out []benchLine
	pkg := ""
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = strings.TrimSpace(p)
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			continue
		}
		bl := benchLine{pkg: pkg, name: procsSuffix.ReplaceAllString(f[0], ""), n: n, metrics: map[string]float64{}}
		for i := 2; i+1 < len(f); i += 2 {
			if v, err := strconv.ParseFloat(f[i], 64); err == nil {
				bl.metrics[f[i+1]] = v
			}
		}
		out = append(out, bl)
	}
	return out, sc.Err()
}

// medianRuns merges the results of one benchmark run several times (go test
// -count N) into one line holding the median of every metric; n becomes the
// number of runs.
func medianRuns(lines []benchLine) []benchLine {
	var out []benchLine
	idx := map[string]int{}
	vals := map[string]map[string][]float64{}
	for _, l := range lines {
		key := l.pkg + " " + l.name
		if _, ok := idx[key]; !ok {
			idx[key] = len(out)
			out = append(out, benchLine{pkg: l.pkg, name: l.name, metrics: map[string]float64{}})
			vals[key] = map[string][]float64{}
		}
		out[idx[key]].n++
		for unit, v := range l.metrics {
			vals[key][unit] = append(vals[key][unit], v)
		}
	}
	for key, i := range idx {
		for unit, vs := range vals[key] {
			out[i].metrics[unit] = median(vs)
		}
	}
	return out
}

func runsNote(l benchLine) string {
	if l.n > 1 {
		return fmt.Sprintf(", median of %d runs", l.n)
	}
	return ""
}

// cmdMicro prints decode + stitch events per second from `go test -bench`
// output holding tracer's BenchmarkDecode and tests/bench's BenchmarkStitch.
func cmdMicro(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("micro", stderr)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("micro: want one file (the output of go test -bench; - for stdin)")
	}
	var r io.Reader = os.Stdin
	if fs.Arg(0) != "-" {
		f, err := os.Open(fs.Arg(0))
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	parsed, err := parseBench(r)
	if err != nil {
		return err
	}
	lines := medianRuns(parsed)
	var decode *benchLine
	var stitch []benchLine
	for i, l := range lines {
		switch {
		case l.name == "BenchmarkDecode" && strings.HasSuffix(l.pkg, "/tracer"):
			decode = &lines[i]
		case strings.HasPrefix(l.name, "BenchmarkStitch"):
			stitch = append(stitch, l)
		}
	}
	if decode == nil || decode.metrics["ns/op"] == 0 {
		return errors.New("micro: no BenchmarkDecode result of package tracer in the input")
	}
	if len(stitch) == 0 {
		return errors.New("micro: no BenchmarkStitch results in the input")
	}
	dec := decode.metrics["ns/op"]
	fmt.Fprintf(stdout, "\n== decode + stitch, user space, one core (GOMAXPROCS=1), target >= %.0f million events/s\n", eventsTarget/1e6)
	fmt.Fprintf(stdout, "decode: tracer BenchmarkDecode %.1f ns/event (%.0f B/op, %.0f allocs/op)%s\n", dec, decode.metrics["B/op"], decode.metrics["allocs/op"], runsNote(*decode))
	var t table
	t.add("stitch benchmark", "runs", "stitch ns/event", "B/event", "allocs/event", "decode+stitch ns/event", "events/s", "target", "result")
	missed := false
	for _, s := range stitch {
		st := s.metrics["ns/op"]
		total := dec + st
		eps := 1e9 / total
		result := "OK"
		if eps < eventsTarget {
			result, missed = "MISSED", true
		}
		t.addf("%s\t%d\t%.1f\t%.0f\t%.2f\t%.1f\t%.2fM\t>= %.0fM\t%s", stitchLabel(s), s.n, st,
			s.metrics["B/op"], s.metrics["allocs/op"], total, eps/1e6, eventsTarget/1e6, result)
	}
	t.print(stdout)
	if missed {
		return errMissed
	}
	return nil
}

// stitchLabel names a stitch benchmark by its package (the module path cut
// off) and name.
func stitchLabel(l benchLine) string {
	pkg := l.pkg
	if i := strings.Index(pkg, "/skbtrail/skbtrail/"); i >= 0 {
		pkg = pkg[i+len("/skbtrail/skbtrail/"):]
	}
	return pkg + " " + l.name
}
