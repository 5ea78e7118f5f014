// Package e2e runs the skbtrail binary against lab namespaces and asserts on
// the journeys it prints. Every test here needs root; CI sets
// SKBTRAIL_REQUIRE_PRIVILEGED=1 so a skip becomes a failure.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

var skbtrailBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "skbtrail-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	skbtrailBin = filepath.Join(dir, "skbtrail")
	out, err := exec.Command("go", "build", "-o", skbtrailBin, "../../cmd/skbtrail").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build skbtrail: %v\n%s", err, out)
		os.Exit(2)
	}
	raceDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// raceDir holds the -race build of skbtrail the daemon tests run.
var (
	raceDir  string
	raceOnce sync.Once
	raceBin  string
	raceErr  error
)

// raceBinary builds skbtrail with the race detector once: the daemon tests
// run it (concurrent traces through the API, the drop stream, the
// processor and the stream writer) and fail on any race report.
func raceBinary(t *testing.T) string {
	t.Helper()
	raceOnce.Do(func() {
		cc := os.Getenv("CC")
		for _, c := range []string{"gcc", "clang"} {
			if cc != "" {
				break
			}
			if p, err := exec.LookPath(c); err == nil {
				cc = p
			}
		}
		raceBin = filepath.Join(raceDir, "skbtrail-race")
		cmd := exec.Command("go", "build", "-race", "-o", raceBin, "../../cmd/skbtrail")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "CC="+cc)
		if out, err := cmd.CombinedOutput(); err != nil {
			raceErr = fmt.Errorf("go build -race: %v\n%s", err, out)
		}
	})
	if raceErr != nil {
		t.Fatal(raceErr)
	}
	return raceBin
}

var schema = func() *jsonschema.Schema {
	c := jsonschema.NewCompiler()
	s, err := c.Compile("journey.schema.json")
	if err != nil {
		panic(err)
	}
	return s
}()

// traceResult is one run of `skbtrail trace`.
type traceResult struct {
	journeys []journey.Journey
	exit     int
	stderr   string
	stdout   string
}

// runTrace runs skbtrail with args (plus --json) and decodes and validates
// every output line against the contract's schema.
func runTrace(t *testing.T, args ...string) traceResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, skbtrailBin, append([]string{"trace", "--json"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	return finishTrace(t, args, cmd.Run(), stdout.Bytes(), stderr.String())
}

func finishTrace(t *testing.T, args []string, err error, stdout []byte, stderr string) traceResult {
	t.Helper()
	res := traceResult{stderr: stderr, stdout: string(stdout)}
	if ee, ok := err.(*exec.ExitError); ok {
		res.exit = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run skbtrail: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(stdout))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		line := sc.Bytes()
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(line))
		if err != nil {
			t.Fatalf("output line is not JSON: %v\n%s", err, line)
		}
		if err := schema.Validate(inst); err != nil {
			t.Fatalf("journey does not match the contract schema: %v\n%s", err, line)
		}
		var j journey.Journey
		if err := json.Unmarshal(line, &j); err != nil {
			t.Fatalf("decode journey: %v", err)
		}
		res.journeys = append(res.journeys, j)
	}
	t.Logf("skbtrail %s -> exit %d\nstderr: %s\nstdout: %s", strings.Join(args, " "), res.exit, res.stderr, res.stdout)
	return res
}

// bgTrace is a `skbtrail trace --json` running while the test makes traffic.
type bgTrace struct {
	args   []string
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr chan string // all of stderr, once it closes
	ready  string      // the "skbtrail: tracing ..." line
}

// startTrace starts a trace and returns once it printed that it is tracing.
func startTrace(t *testing.T, args ...string) *bgTrace {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	b := &bgTrace{args: args, stderr: make(chan string, 1)}
	b.cmd = exec.CommandContext(ctx, skbtrailBin, append([]string{"trace", "--json"}, args...)...)
	b.cmd.Stdout = &b.stdout
	pipe, err := b.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := b.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		var all strings.Builder
		sc := bufio.NewScanner(pipe)
		for sc.Scan() {
			all.WriteString(sc.Text() + "\n")
			if strings.HasPrefix(sc.Text(), "skbtrail: tracing") {
				ready <- sc.Text()
			}
		}
		close(ready)
		b.stderr <- all.String()
	}()
	line, ok := <-ready
	if !ok {
		err := b.cmd.Wait()
		t.Fatalf("trace never became ready (%v): %s", err, <-b.stderr)
	}
	b.ready = line
	return b
}

// wait waits for the trace to end and decodes its journeys.
func (b *bgTrace) wait(t *testing.T) traceResult {
	t.Helper()
	err := b.cmd.Wait()
	return finishTrace(t, b.args, err, b.stdout.Bytes(), <-b.stderr)
}

// probeService traces one probe SYN from pod A to the web ClusterIP.
func probeService(t *testing.T, l *lab.Lab, extra ...string) (journey.Journey, traceResult) {
	t.Helper()
	return probeFromPodA(t, l, append([]string{"--to", l.WebService.Addr()}, extra...)...)
}

// probeFromPodA traces one probe skbtrail sends from pod A (--probe, 5 s)
// to what args name and requires exactly one journey.
func probeFromPodA(t *testing.T, l *lab.Lab, args ...string) (journey.Journey, traceResult) {
	t.Helper()
	res := runTrace(t, append([]string{"--from-netns", l.PodA, "--probe", "--timeout", "5s"}, args...)...)
	if len(res.journeys) != 1 {
		t.Fatalf("trace %v: want 1 journey, got %d (exit %d)\nstderr: %s", args, len(res.journeys), res.exit, res.stderr)
	}
	return res.journeys[0], res
}

func hopIndex(j journey.Journey, netns, device, event string) int {
	for i, h := range j.Hops {
		if h.Netns == netns && (device == "" || h.Device == device) && (event == "" || h.Event == event) {
			return i
		}
	}
	return -1
}

// requireOrderedHops asserts that the hops visit these (netns, device) in order.
func requireOrderedHops(t *testing.T, j journey.Journey, steps ...[2]string) {
	t.Helper()
	pos := -1
	for _, s := range steps {
		found := -1
		for i := pos + 1; i < len(j.Hops); i++ {
			if j.Hops[i].Netns == s[0] && (s[1] == "" || j.Hops[i].Device == s[1]) {
				found = i
				break
			}
		}
		if found < 0 {
			t.Fatalf("no hop %s/%s after hop %d; hops: %+v", s[0], s[1], pos, j.Hops)
		}
		pos = found
	}
}

func findingCodes(j journey.Journey) []string {
	var c []string
	for _, f := range j.Findings {
		c = append(c, f.Code)
	}
	return c
}

func hasFinding(j journey.Journey, code string) bool {
	for _, f := range j.Findings {
		if f.Code == code {
			return true
		}
	}
	return false
}

func errorFindings(j journey.Journey) []string {
	var c []string
	for _, f := range j.Findings {
		if f.Severity == journey.SeverityError {
			c = append(c, f.Code)
		}
	}
	return c
}
