package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

type daemonProc struct {
	cmd     *exec.Cmd
	socket  string
	events  string
	metrics string
	log     *strings.Builder
	done    chan error
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startDaemon runs `skbtrail daemon` with a private socket, stream and
// metrics port, and waits until its socket answers.
func startDaemon(t *testing.T) *daemonProc {
	t.Helper()
	return startDaemonIn(t, t.TempDir())
}

func startDaemonIn(t *testing.T, dir string) *daemonProc {
	t.Helper()
	return startDaemonArgs(t, dir, "--rate-limit", "0")
}

// startDaemonArgs is startDaemonIn with the daemon's extra flags.
func startDaemonArgs(t *testing.T, dir string, extra ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{
		socket:  filepath.Join(dir, "skbtrail.sock"),
		events:  filepath.Join(dir, "events.ndjson"),
		metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		log:     &strings.Builder{},
		done:    make(chan error, 1),
	}
	d.cmd = exec.Command(raceBinary(t), append([]string{"daemon", "--listen", "unix://" + d.socket, "--metrics", d.metrics, "--events", d.events}, extra...)...)
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=0 exitcode=66")
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		if d.cmd.ProcessState == nil {
			_ = d.cmd.Process.Kill() // our own child, by PID
			<-d.done
		}
		t.Logf("daemon log:\n%s", d.log.String())
		if strings.Contains(d.log.String(), "WARNING: DATA RACE") {
			t.Errorf("the daemon (a -race build) reported a data race; see its log above")
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
			return d
		}
		select {
		case err := <-d.done:
			t.Fatalf("daemon exited early: %v\n%s", err, d.log.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Fatalf("daemon socket never answered\n%s", d.log.String())
	return nil
}

func (d *daemonProc) ping(t *testing.T) {
	t.Helper()
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return net.Dial("unix", d.socket)
	}}}
	resp, err := c.Get("http://skbtrail/v1/ping")
	if err != nil {
		t.Fatalf("daemon API does not answer: %v", err)
	}
	resp.Body.Close()
}

func (d *daemonProc) metric(t *testing.T, re *regexp.Regexp) float64 {
	t.Helper()
	var sum float64
	for _, line := range strings.Split(d.scrape(t), "\n") {
		if re.MatchString(line) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

// scrape returns the daemon's /metrics page.
func (d *daemonProc) scrape(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + d.metrics + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// waitEvent polls the event stream for a journey matching ok.
func (d *daemonProc) waitEvent(t *testing.T, ok func(journey.Journey) bool) journey.Journey {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		f, err := os.Open(d.events)
		if err == nil {
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<16), 1<<22)
			for sc.Scan() {
				var j journey.Journey
				if json.Unmarshal(sc.Bytes(), &j) == nil && ok(j) {
					f.Close()
					return j
				}
			}
			f.Close()
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no matching event in the stream")
	return journey.Journey{}
}

// skbtrailPrograms counts loaded BPF programs with skbtrail's names.
func skbtrailPrograms(t *testing.T) int {
	t.Helper()
	n := 0
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return n
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err == nil && (strings.HasPrefix(info.Name, "tp_") || strings.HasPrefix(info.Name, "nf_stage")) {
			n++
		}
	}
}

func TestDaemon(t *testing.T) {
	l := lab.NewForTest(t, lab.Config{})
	before := skbtrailPrograms(t)
	d := startDaemon(t)

	// always-on drop monitor: seed 002's drop appears in the stream and metrics
	if err := l.ApplyFault("forward-drop"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Dial(ctx, l.PodA, l.WebService.Addr(), time.Second); err == nil {
		t.Fatal("connect through the FORWARD drop succeeded")
	}
	ev := d.waitEvent(t, func(j journey.Journey) bool {
		return j.Verdict.Kind == journey.Dropped && j.Verdict.Netns == l.NodeB && j.Verdict.Reason == "NETFILTER_DROP"
	})
	if ev.Verdict.Device != "flannel.1" {
		t.Errorf("drop event device %q, want flannel.1", ev.Verdict.Device)
	}
	re := regexp.MustCompile(`^skbtrail_drops_total\{netns="` + regexp.QuoteMeta(l.NodeB) + `",reason="NETFILTER_DROP"\} `)
	if v := d.metric(t, re); v < 1 {
		t.Errorf("skbtrail_drops_total for %s NETFILTER_DROP = %v, want >= 1", l.NodeB, v)
	}
	// every loss counter is exported (zero on a quiet lab, but present)
	scrape := d.scrape(t)
	for _, name := range []string{"skbtrail_ringbuf_full_total", "skbtrail_tracked_map_full_total", "skbtrail_channel_overflow_total", "skbtrail_malformed_records_total", "skbtrail_late_events_total", "skbtrail_drop_monitor_shed_total"} {
		if !regexp.MustCompile(`(?m)^` + name + ` [0-9.e+]+$`).MatchString(scrape) {
			t.Errorf("metric %s not exported", name)
		}
	}

	// a namespace that vanishes does not stop the daemon
	gone := l.Prefix + "-gone"
	if out, err := exec.Command("ip", "netns", "add", gone).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v %s", err, out)
	}
	time.Sleep(1500 * time.Millisecond) // the daemon attaches its observers
	if out, err := exec.Command("ip", "netns", "del", gone).CombinedOutput(); err != nil {
		t.Fatalf("ip netns del: %v %s", err, out)
	}
	time.Sleep(1500 * time.Millisecond)
	d.ping(t)

	// a trace through the daemon gives the journey a private trace gives
	viaDaemon := runTrace(t, "--daemon-socket", d.socket, "--from-netns", l.PodA, "--to", l.WebService.Addr(), "--probe", "--timeout", "5s")
	private := runTrace(t, "--no-daemon", "--from-netns", l.PodA, "--to", l.WebService.Addr(), "--probe", "--timeout", "5s")
	if len(viaDaemon.journeys) != 1 || len(private.journeys) != 1 {
		t.Fatalf("journeys: daemon %d, private %d", len(viaDaemon.journeys), len(private.journeys))
	}
	a, b := viaDaemon.journeys[0], private.journeys[0]
	if a.Verdict != b.Verdict || viaDaemon.exit != private.exit {
		t.Errorf("verdicts differ: daemon %+v (exit %d), private %+v (exit %d)", a.Verdict, viaDaemon.exit, b.Verdict, private.exit)
	}
	if fmt.Sprint(findingCodes(a)) != fmt.Sprint(findingCodes(b)) || len(a.Rewrites) != len(b.Rewrites) || len(a.Encaps) != len(b.Encaps) {
		t.Errorf("journeys differ:\ndaemon  %v %+v %+v\nprivate %v %+v %+v", findingCodes(a), a.Rewrites, a.Encaps, findingCodes(b), b.Rewrites, b.Encaps)
	}
	if path(a) != path(b) {
		t.Errorf("paths differ:\ndaemon  %s\nprivate %s", path(a), path(b))
	}
	if a.Verdict.Kind != journey.Dropped || a.Verdict.Rule != "policy DROP" {
		t.Errorf("daemon journey verdict %+v", a.Verdict)
	}

	// SIGTERM: exit 0, socket gone, no programs left
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Fatalf("daemon exit after SIGTERM: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not exit after SIGTERM")
	}
	if _, err := os.Stat(d.socket); !os.IsNotExist(err) {
		t.Errorf("socket still there after SIGTERM: %v", err)
	}
	// the kernel frees programs asynchronously after the last reference goes
	n := skbtrailPrograms(t)
	for deadline := time.Now().Add(5 * time.Second); n > before && time.Now().Before(deadline); n = skbtrailPrograms(t) {
		time.Sleep(100 * time.Millisecond)
	}
	if n > before {
		t.Errorf("%d skbtrail BPF programs still loaded after SIGTERM (were %d before)", n, before)
	}
}

// path is the sequence of netns/device of the tx/rx/drop hops.
func path(j journey.Journey) string {
	var s []string
	for _, h := range j.Hops {
		if !strings.HasPrefix(h.Event, "nf:") {
			s = append(s, h.Netns+"/"+h.Device+"/"+h.Event)
		}
	}
	return strings.Join(s, " ")
}

// A daemon killed with SIGKILL leaves only its socket file (nothing is
// pinned); the next one starts on the same path and serves.
func TestDaemonRestartAfterKill(t *testing.T) {
	lab.RequirePrivileged(t)
	dir := t.TempDir()
	d := startDaemonIn(t, dir)
	if err := d.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-d.done
	if _, err := os.Stat(d.socket); err != nil {
		t.Fatalf("expected the killed daemon's stale socket: %v", err)
	}
	d2 := startDaemonIn(t, dir)
	d2.ping(t)
	if err := d2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-d2.done; err != nil {
		t.Fatalf("second daemon: %v", err)
	}
}
