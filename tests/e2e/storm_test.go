package e2e

import (
	"bufio"
	"context"
	"net"
	"os"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// flood sends UDP datagrams from pod A to pod B (through node B's FORWARD
// drop) as fast as one socket can until ctx ends: a drop storm between the
// lab's own namespaces, bounded by ctx. It returns the datagrams sent.
func flood(ctx context.Context, t *testing.T, l *lab.Lab, workers int) *atomic.Uint64 {
	t.Helper()
	var sent atomic.Uint64
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		var c net.Conn
		if err := lab.InNetns(l.PodA, func() error {
			var err error
			c, err = net.Dial("udp4", l.PodBIP+":9")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			payload := make([]byte, 64)
			for ctx.Err() == nil {
				if _, err := c.Write(payload); err == nil {
					sent.Add(1)
				}
			}
		}()
	}
	t.Cleanup(wg.Wait)
	return &sent
}

// Issue 13: with the daemon running and a flood of drops, a trace through
// its API is still answered at once, and what had to be shed is counted
// and visible (metrics; the stream's suppressed counts).
func TestDaemonDropStorm(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	if err := l.ApplyFault("forward-drop"); err != nil {
		t.Fatal(err)
	}
	d := startDaemonArgs(t, t.TempDir(), "--rate-limit", "10")
	// the same trace without a storm: its time to ready is the reference
	// (today dominated by the rule snapshots of every namespace, issue 15)
	quiet := time.Now()
	bgq := startTrace(t, "--daemon-socket", d.socket, "--from-netns", l.PodA, "--to", l.WebService.Addr(), "--probe", "--timeout", "5s")
	quietReady := time.Since(quiet)
	bgq.wait(t)
	ctx, stop := context.WithTimeout(context.Background(), 20*time.Second)
	defer stop()
	sent := flood(ctx, t, l, 2)

	dropRE := regexp.MustCompile(`^skbtrail_drops_total\{netns="` + regexp.QuoteMeta(l.NodeB) + `",reason="NETFILTER_DROP"\} `)
	deadline := time.Now().Add(10 * time.Second)
	for d.metric(t, dropRE) < 10000 {
		if time.Now().After(deadline) {
			t.Fatalf("the storm did not get going: %v drops counted, %d datagrams sent", d.metric(t, dropRE), sent.Load())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// during the storm: a trace through the API is ready within a second
	// and its journey is the dropped SYN
	start := time.Now()
	bg := startTrace(t, "--daemon-socket", d.socket, "--from-netns", l.PodA, "--to", l.WebService.Addr(), "--probe", "--timeout", "5s")
	ready := time.Since(start)
	t.Logf("trace ready after %s during the drop storm, %s without", ready, quietReady)
	if ready > quietReady+time.Second {
		t.Errorf("the drop storm delays a trace by %s (ready after %s, %s without), want < 1s", ready-quietReady, ready, quietReady)
	}
	// and in absolute terms (the client's start included; the rule work
	// no longer snapshots every namespace with tool processes)
	if ready > time.Second {
		t.Errorf("trace ready after %s during the drop storm, want < 1s", ready)
	}
	res := bg.wait(t)
	answered := time.Since(start)
	if len(res.journeys) != 1 {
		t.Fatalf("want 1 journey during the storm, got %d (exit %d)", len(res.journeys), res.exit)
	}
	j := res.journeys[0]
	if j.Verdict.Kind != journey.Dropped || j.Verdict.Netns != l.NodeB || !hasFinding(j, "NF_POLICY_DROP") {
		t.Errorf("journey during the storm: verdict %+v findings %v", j.Verdict, findingCodes(j))
	}
	if j.LostEvents > 0 && !hasFinding(j, "EVENTS_LOST") {
		t.Errorf("%d events lost but no EVENTS_LOST finding", j.LostEvents)
	}
	t.Logf("storm: %d datagrams sent; trace answered in %s", sent.Load(), answered)

	// still during the storm: several traces through the API at once (the
	// daemon is a -race build), each gets its own journey
	targets := [][]string{
		{"--to", l.WebService.Addr()},
		{"--proto", "udp", "--to", l.DNSService.Addr()},
		{"--proto", "icmp", "--dst", l.PodBIP},
	}
	var bgs []*bgTrace
	for _, tg := range targets {
		bgs = append(bgs, startTrace(t, append([]string{"--daemon-socket", d.socket, "--from-netns", l.PodA, "--probe", "--timeout", "5s"}, tg...)...))
	}
	for i, bg := range bgs {
		r := bg.wait(t)
		if len(r.journeys) != 1 || r.journeys[0].Verdict.Kind == journey.Unknown {
			t.Errorf("concurrent trace %v: %d journeys (exit %d)", targets[i], len(r.journeys), r.exit)
		}
	}
	stop()

	// what was shed is counted: the stream's rate limit suppressed most drop
	// events, and the suppressed counts are in the metrics and in the stream
	suppressed := d.metric(t, regexp.MustCompile(`^skbtrail_events_suppressed_total`))
	drops := d.metric(t, dropRE)
	lost := d.metric(t, regexp.MustCompile(`^skbtrail_events_lost_total `))
	shed := d.metric(t, regexp.MustCompile(`^skbtrail_drop_monitor_shed_total `))
	t.Logf("storm: %v drops counted, %v suppressed in the stream, %v trace events lost, %v drop-monitor events shed", drops, suppressed, lost, shed)
	if suppressed == 0 || suppressed+lost < drops/2 {
		t.Errorf("%v drops, %v suppressed, %v lost: the shed events are not counted", drops, suppressed, lost)
	}
	lines, maxSuppressed := streamLines(t, d.events)
	if lines == 0 || lines > int(drops)/10 || maxSuppressed == 0 {
		t.Errorf("stream: %d lines (largest suppressed count %d) for %v drops: want rate-limited lines carrying suppressed counts", lines, maxSuppressed, drops)
	}
	d.ping(t)
}

// streamLines counts the journeys of an event stream and the largest
// "suppressed" count among them.
func streamLines(t *testing.T, file string) (int, uint64) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n, most := 0, uint64(0)
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	re := regexp.MustCompile(`"suppressed":([0-9]+)`)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), `"schema"`) {
			continue
		}
		n++
		if m := re.FindStringSubmatch(sc.Text()); m != nil {
			var v uint64
			for _, c := range m[1] {
				v = v*10 + uint64(c-'0')
			}
			most = max(most, v)
		}
	}
	return n, most
}
