package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/tests/lab"
)

// Targets of issue 6: what skbtrail may cost of the throughput.
const (
	daemonTarget = 0.02 // always-on daemon
	traceTarget  = 0.05 // daemon + an active trace of another flow
)

// unrelatedTarget is the flow the active trace waits for: nothing in the lab
// sends to it (TEST-NET-1, discard port).
const unrelatedTarget = "192.0.2.99:9"

const iperfPort = 5201

type tpConfig struct {
	ipv6 bool // iperf3 over IPv6 (a dual-stack lab, pod B's IPv6 address)
	// ipv6Underlay: that IPv6 traffic over an IPv6 underlay (flannel-v6.1,
	// outer IPv6)
	ipv6Underlay bool
	// traceStart: how long a trace may take to say it is tracing (it reads
	// every namespace's rules first: slow on a busy node with many)
	traceStart time.Duration
	skbtrail   string
	source     string // the binary as given (skbtrail is its copy)
	rounds     int
	duration   time.Duration
	omit       time.Duration
	profile    time.Duration
	prefix     string
	iptables   string
	quiet      time.Duration // total time to wait for foreign skbtrail programs to go away
	modes      string
	affinity   string // iperf3 -A client,server
}

// mode is one way of running the benchmark: attach sets it up before the
// iperf3 run and returns how to take it down again.
type mode struct {
	key, name string
	target    float64 // allowed cost (0: none, a reference)
	attach    func(ctx context.Context) (*attachment, error)
}

// attachment is what a mode started; check says whether it is still
// healthy after the run, detach stops it and returns notes for the report.
type attachment struct {
	owner  int   // PID of the skbtrail process holding the BPF programs (0: none)
	pids   []int // skbtrail processes whose CPU time counts
	check  func() error
	detach func() (note string, err error)
}

type iperfResult struct {
	bps         float64
	retransmits int64
}

type runResult struct {
	round   int
	mode    string
	res     iperfResult
	cpu     float64 // CPU time of the skbtrail processes, in cores (-1: none ran)
	foreign []string
	note    string
}

type runner struct {
	cfg     tpConfig
	out     io.Writer
	log     io.Writer
	lab     *lab.Lab
	kids    children
	tmp     string
	modes   []mode
	quiet   time.Duration // what is left of cfg.quiet
	version string
}

func cmdThroughput(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	cfg := tpConfig{}
	fs := newFlagSet("throughput", stderr)
	fs.StringVar(&cfg.skbtrail, "skbtrail", "bin/skbtrail", "the skbtrail binary")
	fs.IntVar(&cfg.rounds, "rounds", 3, "rounds; each runs every mode once (in a rotated order) and the median is reported")
	fs.DurationVar(&cfg.duration, "duration", 8*time.Second, "measured seconds of each iperf3 run")
	fs.DurationVar(&cfg.omit, "omit", time.Second, "seconds iperf3 runs before measuring (TCP ramp-up)")
	fs.DurationVar(&cfg.profile, "profile", 4*time.Second, "measured seconds of the per-program cost runs (0: skip them)")
	fs.StringVar(&cfg.prefix, "prefix", "", "lab prefix (default: bench + 4 random hex digits)")
	fs.StringVar(&cfg.iptables, "iptables", "", "iptables binary of the lab (default: the lab's default)")
	fs.DurationVar(&cfg.traceStart, "trace-start", 30*time.Second, "how long a trace may take to start tracing (it first reads every namespace's rules)")
	fs.BoolVar(&cfg.ipv6, "ipv6", false, "measure IPv6: a dual-stack lab, iperf3 to pod B's IPv6 address (inner IPv6 over the IPv4 VXLAN)")
	fs.BoolVar(&cfg.ipv6Underlay, "ipv6-underlay", false, "with --ipv6: over an IPv6 underlay (flannel-v6.1, outer IPv6)")
	fs.DurationVar(&cfg.quiet, "quiet-wait", 30*time.Second, "in all, how long to wait for other skbtrail instances' BPF programs to go away before runs")
	defAffinity := ""
	if runtime.NumCPU() >= 2 {
		defAffinity = "0,1"
	}
	fs.StringVar(&cfg.affinity, "affinity", defAffinity, "iperf3 -A: CPU of the client,CPU of the server (steadier numbers; empty: let the scheduler place them)")
	fs.StringVar(&cfg.modes, "modes", "abcdef", "modes to run (a, the baseline, always runs): a nothing, b daemon, c daemon + trace, d tcpdump, e daemon + trace with netfilter observers in every namespace, f daemon + trace --pcapng")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("throughput: unexpected arguments %q", fs.Args())
	}
	if cfg.rounds < 1 || cfg.duration < time.Second || cfg.omit < 0 {
		return errors.New("throughput: --rounds must be >= 1, --duration >= 1s, --omit >= 0")
	}
	if cfg.ipv6Underlay && !cfg.ipv6 {
		return errors.New("throughput: --ipv6-underlay needs --ipv6")
	}
	if err := requireRoot("skbtrail-bench throughput"); err != nil {
		return err
	}
	for _, bin := range []string{"iperf3", "tcpdump", "ip", "ss"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("throughput: %s is needed: %w", bin, err)
		}
	}
	if cfg.skbtrail, err = filepath.Abs(cfg.skbtrail); err != nil {
		return err
	}
	if _, err := os.Stat(cfg.skbtrail); err != nil {
		return fmt.Errorf("throughput: skbtrail binary: %w (run `make build` first)", err)
	}
	if cfg.prefix == "" {
		var r [2]byte
		_, _ = rand.Read(r[:])
		cfg.prefix = "bench" + hex.EncodeToString(r[:])
	}

	b := &runner{cfg: cfg, out: stdout, log: stderr, quiet: cfg.quiet}
	for _, m := range []mode{
		{key: "a", name: "baseline (nothing attached)", attach: b.attachNothing},
		{key: "b", name: "skbtrail daemon (always-on)", target: daemonTarget, attach: b.attachDaemon},
		{key: "c", name: "daemon + active trace (other flow)", target: traceTarget, attach: b.traceAttacher()},
		{key: "d", name: "tcpdump -i any in node-a + node-b", attach: b.attachTcpdump},
		{key: "e", name: "daemon + trace --netfilter all (other flow)", attach: b.traceAttacher("--netfilter", "all")},
		// bytes are copied only for tracked skbs: an untracked flow pays what it pays in c
		{key: "f", name: "daemon + trace --pcapng (other flow)", target: traceTarget, attach: b.traceAttacher("--pcapng", os.DevNull)},
	} {
		if m.key == "a" || strings.Contains(cfg.modes, m.key) {
			b.modes = append(b.modes, m)
		}
	}
	if b.tmp, err = os.MkdirTemp("", "skbtrail-bench-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.tmp)
	// a private copy: a `make build` elsewhere must not swap the binary between modes
	b.cfg.source = cfg.skbtrail
	if b.cfg.skbtrail, err = copyExecutable(cfg.skbtrail, filepath.Join(b.tmp, "skbtrail")); err != nil {
		return err
	}
	version, err := exec.CommandContext(ctx, b.cfg.skbtrail, "version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("skbtrail version: %v: %s", err, version)
	}
	b.version = strings.TrimSpace(string(version))
	// whatever happens (error, Ctrl-C): stop our processes, then the lab
	defer b.kids.stopAll()
	start := time.Now()
	b.logf("lab %s: up", cfg.prefix)
	upCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	b.lab, err = lab.Up(upCtx, lab.Config{Prefix: cfg.prefix, Iptables: cfg.iptables, DualStack: cfg.ipv6, IPv6Underlay: cfg.ipv6 && cfg.ipv6Underlay, Logf: b.logf})
	cancel()
	if err != nil {
		return err
	}
	defer func() {
		b.kids.stopAll() // the iperf3 server holds pod-b's namespace
		if derr := b.lab.Down(); derr != nil {
			err = errors.Join(err, derr)
		} else {
			b.logf("lab %s: down", cfg.prefix)
		}
	}()
	if err := b.lab.Verify(ctx, 5*time.Second); err != nil {
		return err
	}
	if err := b.startServer(ctx); err != nil {
		return err
	}

	fmt.Fprintf(b.out, "\n== throughput: iperf3 %s (pod-a) -> %s (pod-b), TCP, through veth + bridge + VXLAN + router\n", b.lab.PodA, net.JoinHostPort(b.target(), strconv.Itoa(iperfPort)))
	b.printEnv()
	b.logf("warm-up run (not counted)")
	if _, err := b.iperf(ctx, 2*time.Second, 0); err != nil {
		return fmt.Errorf("warm-up: %w", err)
	}
	var results []runResult
	for r := range cfg.rounds {
		for i := range b.modes {
			m := b.modes[(i+r)%len(b.modes)] // rotate: no mode always runs first or last
			res, err := b.measure(ctx, r, m)
			if err != nil {
				return fmt.Errorf("round %d, mode %s: %w", r+1, m.key, err)
			}
			cpu := ""
			if res.cpu >= 0 {
				cpu = fmt.Sprintf("  skbtrail CPU %.1f%%", res.cpu*100)
			}
			b.logf("round %d/%d  %-47s %6.2f Gbit/s  retr %d%s%s", r+1, cfg.rounds, m.key+") "+m.name, res.res.bps/1e9, res.res.retransmits, cpu, res.note)
			results = append(results, res)
		}
	}
	missed := b.printThroughput(results)

	if cfg.profile > 0 {
		for _, m := range b.modes {
			if m.key == "b" || m.key == "c" || m.key == "e" {
				if err := b.profileMode(ctx, m); err != nil {
					return fmt.Errorf("per-program cost, mode %s: %w", m.key, err)
				}
			}
		}
	}
	fmt.Fprintf(b.out, "\nload average after: %s; throughput benchmark took %v\n", loadavg(), time.Since(start).Round(time.Second))
	if missed {
		return errMissed
	}
	return nil
}

func (b *runner) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "skbtrail-bench: "+format+"\n", args...)
}

func (b *runner) printEnv() {
	var u unix.Utsname
	_ = unix.Uname(&u)
	fmt.Fprintf(b.out, "date %s, kernel %s, %d cores (%s), load average before: %s\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), unix.ByteSliceToString(u.Release[:]), runtime.NumCPU(), cpuModel(), loadavg())
	fmt.Fprintf(b.out, "%s: %s (a copy of it runs, whatever rebuilds it meanwhile)\n", b.cfg.source, b.version)
	pin := ""
	if b.cfg.affinity != "" {
		pin = " -A " + b.cfg.affinity
	}
	fmt.Fprintf(b.out, "%d rounds x %d modes, each one iperf3 -t %d -O %d%s run (median of the rounds; the order of the modes rotates between rounds)\n",
		b.cfg.rounds, len(b.modes), int(b.cfg.duration.Seconds()), int(b.cfg.omit.Seconds()), pin)
}

func copyExecutable(src, dst string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return "", err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", err
	}
	return dst, out.Close()
}

func loadavg() string {
	s := sysctlValue("/proc/loadavg")
	f := strings.Fields(s)
	if len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return s
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

// startServer runs iperf3 -s in pod-b for the whole benchmark.
func (b *runner) startServer(ctx context.Context) error {
	srv, err := b.kids.start("iperf3 server", "ip", "netns", "exec", b.lab.PodB,
		"iperf3", "-s", "-B", b.target(), "-p", strconv.Itoa(iperfPort))
	if err != nil {
		return err
	}
	b.logf("iperf3 server in %s: pid %d", b.lab.PodB, srv.pid())
	return srv.waitFor(ctx, 10*time.Second, "a listening socket", func() bool {
		out, err := b.lab.RunContext(ctx, b.lab.PodB, "ss", "-Hltn", fmt.Sprintf("sport = :%d", iperfPort))
		return err == nil && strings.TrimSpace(out) != ""
	})
}

// iperf runs the client in pod-a for omit + d seconds.
// target is the address iperf3 measures to: pod B's IPv4 address, or its
// IPv6 one (--ipv6).
func (b *runner) target() string {
	if b.cfg.ipv6 {
		return b.lab.PodBIP6
	}
	return b.lab.PodBIP
}

func (b *runner) iperf(ctx context.Context, d, omit time.Duration) (iperfResult, error) {
	ctx, cancel := context.WithTimeout(ctx, d+omit+30*time.Second)
	defer cancel()
	args := []string{"netns", "exec", b.lab.PodA, "iperf3", "-c", b.target(), "-p", strconv.Itoa(iperfPort),
		"-t", strconv.Itoa(int(d.Seconds())), "-O", strconv.Itoa(int(omit.Seconds())), "-J"}
	if b.cfg.affinity != "" {
		args = append(args, "-A", b.cfg.affinity)
	}
	cmd := exec.CommandContext(ctx, "ip", args...)
	cmd.WaitDelay = 5 * time.Second
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	if err := ctx.Err(); err != nil {
		return iperfResult{}, fmt.Errorf("iperf3 client: %w", err)
	}
	var j struct {
		Error string `json:"error"`
		End   struct {
			SumSent struct {
				Retransmits int64 `json:"retransmits"`
			} `json:"sum_sent"`
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return iperfResult{}, fmt.Errorf("iperf3 client: %v; output not JSON (%v):\n%s\n%s", runErr, err, indent(string(out)), indent(stderr.String()))
	}
	if j.Error != "" || runErr != nil {
		return iperfResult{}, fmt.Errorf("iperf3 client: %v: %s %s", runErr, j.Error, strings.TrimSpace(stderr.String()))
	}
	if j.End.SumReceived.BitsPerSecond <= 0 {
		return iperfResult{}, errors.New("iperf3 client: no throughput in the result")
	}
	return iperfResult{bps: j.End.SumReceived.BitsPerSecond, retransmits: j.End.SumSent.Retransmits}, nil
}

// measure runs one mode once.
func (b *runner) measure(ctx context.Context, round int, m mode) (runResult, error) {
	a, err := m.attach(ctx)
	if err != nil {
		return runResult{}, err
	}
	detached := false
	defer func() {
		if !detached {
			_, _ = a.detach()
		}
	}()
	_, ours, err := a.programs()
	if err != nil {
		return runResult{}, err
	}
	foreign := b.waitQuiet(ctx, ours)
	watch := watchForeign(ours)
	cpu0, t0 := a.cpu(), time.Now()
	res, err := b.iperf(ctx, b.cfg.duration, b.cfg.omit)
	foreign = mergeUnique(foreign, watch())
	if err != nil {
		return runResult{}, err
	}
	cpu := -1.0
	if len(a.pids) > 0 {
		cpu = (a.cpu() - cpu0).Seconds() / time.Since(t0).Seconds()
	}
	if err := a.check(); err != nil {
		return runResult{}, err
	}
	detached = true
	note, err := a.detach()
	if err != nil {
		return runResult{}, err
	}
	if len(foreign) > 0 {
		note += fmt.Sprintf("  (other skbtrail programs loaded: %s)", short(foreign))
	}
	return runResult{round: round, mode: m.key, res: res, cpu: cpu, foreign: foreign, note: note}, nil
}

// waitQuiet waits (within what is left of the --quiet-wait budget) until no
// other skbtrail BPF programs are loaded: they run on every packet of the
// machine and would tax whatever mode runs. It returns those still loaded.
func (b *runner) waitQuiet(ctx context.Context, ours map[ebpf.ProgramID]bool) []string {
	foreign := foreignPrograms(ours)
	if len(foreign) == 0 || b.quiet <= 0 {
		return foreign
	}
	b.logf("other skbtrail programs are loaded (%d, e.g. %s): waiting up to %v for them to go away", len(foreign), foreign[0], b.quiet.Round(time.Second))
	start := time.Now()
	defer func() { b.quiet -= time.Since(start) }()
	for time.Since(start) < b.quiet {
		select {
		case <-ctx.Done():
			return foreign
		case <-time.After(500 * time.Millisecond):
		}
		if foreign = foreignPrograms(ours); len(foreign) == 0 {
			b.logf("... gone after %v", time.Since(start).Round(100*time.Millisecond))
			return nil
		}
	}
	b.logf("... still loaded: measuring anyway, the run is marked")
	return foreign
}

// programs returns the BPF programs the attachment's skbtrail process holds.
func (a *attachment) programs() ([]ebpf.ProgramID, map[ebpf.ProgramID]bool, error) {
	ours := map[ebpf.ProgramID]bool{}
	if a.owner == 0 {
		return nil, ours, nil
	}
	ids, _, err := processBPF(a.owner)
	if err != nil {
		return nil, nil, err
	}
	for _, id := range ids {
		ours[id] = true
	}
	return ids, ours, nil
}

// cpu is the CPU time (user + system) the attachment's skbtrail processes
// used so far. BPF programs run in the context of whoever sends or
// receives the packet and are not in it.
func (a *attachment) cpu() time.Duration {
	var total time.Duration
	for _, pid := range a.pids {
		total += processCPU(pid)
	}
	return total
}

// processCPU reads utime + stime of a process from /proc/PID/stat (in
// USER_HZ = 100 ticks per second on Linux).
func processCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 {
		s = s[i+1:]
	}
	f := strings.Fields(s) // f[0] is field 3 (state): utime is field 14, stime 15
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseUint(f[11], 10, 64)
	st, _ := strconv.ParseUint(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// watchForeign looks for other skbtrail programs every 500ms until the
// returned function is called, which returns all it saw.
func watchForeign(ours map[ebpf.ProgramID]bool) func() []string {
	stop, done := make(chan struct{}), make(chan []string, 1)
	go func() {
		var seen []string
		t := time.NewTicker(500 * time.Millisecond)
		defer t.Stop()
		for {
			seen = mergeUnique(seen, foreignPrograms(ours))
			select {
			case <-stop:
				done <- mergeUnique(seen, foreignPrograms(ours))
				return
			case <-t.C:
			}
		}
	}()
	return func() []string {
		close(stop)
		return <-done
	}
}

// short lists a few names and counts the rest.
func short(names []string) string {
	const n = 6
	if len(names) <= n {
		return strings.Join(names, " ")
	}
	return fmt.Sprintf("%s ... (%d in all)", strings.Join(names[:n], " "), len(names))
}

func mergeUnique(a, b []string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}

func (b *runner) attachNothing(context.Context) (*attachment, error) {
	return &attachment{check: func() error { return nil }, detach: func() (string, error) { return "", nil }}, nil
}

type daemonProc struct {
	c       *child
	socket  string
	metrics string
}

func freeLocalPort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startDaemon runs `skbtrail daemon` with a private socket, event stream and
// metrics port and waits until its API answers (the daemon attaches its
// programs and the netfilter observers of every namespace before that).
func (b *runner) startDaemon(ctx context.Context) (*daemonProc, error) {
	dir, err := os.MkdirTemp(b.tmp, "daemon-")
	if err != nil {
		return nil, err
	}
	port, err := freeLocalPort()
	if err != nil {
		return nil, err
	}
	d := &daemonProc{socket: filepath.Join(dir, "skbtrail.sock"), metrics: fmt.Sprintf("127.0.0.1:%d", port)}
	d.c, err = b.kids.start("skbtrail daemon", b.cfg.skbtrail, "daemon", "--listen", "unix://"+d.socket,
		"--metrics", d.metrics, "--events", filepath.Join(dir, "events.ndjson"), "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	err = d.c.waitFor(ctx, 60*time.Second, "an answering API socket", func() bool {
		c, err := net.Dial("unix", d.socket)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if err != nil {
		_ = b.kids.stop(d.c)
		return nil, err
	}
	time.Sleep(time.Second) // let the start-up (program loading, attaching) settle
	return d, nil
}

// stopDaemon sends SIGTERM and expects a clean exit.
func (b *runner) stopDaemon(d *daemonProc) error {
	if err := b.kids.stop(d.c); err != nil {
		return fmt.Errorf("skbtrail daemon (pid %d) exit: %v\n%s", d.c.pid(), err, indent(d.c.out.String()))
	}
	return nil
}

func (b *runner) daemonNote(d *daemonProc) string {
	progs, links, err := processBPF(d.c.pid())
	if err != nil {
		return ""
	}
	var ls []string
	for t, n := range links {
		ls = append(ls, fmt.Sprintf("%d %s", n, t))
	}
	slices.Sort(ls)
	return fmt.Sprintf("  [daemon: %d programs, links: %s]", len(progs), strings.Join(ls, ", "))
}

func (b *runner) attachDaemon(ctx context.Context) (*attachment, error) {
	d, err := b.startDaemon(ctx)
	if err != nil {
		return nil, err
	}
	note := b.daemonNote(d)
	return &attachment{
		owner: d.c.pid(),
		pids:  []int{d.c.pid()},
		check: func() error {
			if d.c.exited() {
				return fmt.Errorf("skbtrail daemon exited during the run (%v):\n%s", d.c.err, indent(d.c.out.String()))
			}
			return nil
		},
		detach: func() (string, error) { return note, b.stopDaemon(d) },
	}, nil
}

// traceAttacher runs the daemon plus a trace of a flow nobody sends
// (extra: more trace flags).
func (b *runner) traceAttacher(extra ...string) func(context.Context) (*attachment, error) {
	return func(ctx context.Context) (*attachment, error) { return b.attachTrace(ctx, extra) }
}

func (b *runner) attachTrace(ctx context.Context, extra []string) (*attachment, error) {
	d, err := b.startDaemon(ctx)
	if err != nil {
		return nil, err
	}
	timeout := max(60*time.Second, 3*(b.cfg.duration+b.cfg.omit))
	argv := append([]string{b.cfg.skbtrail, "trace", "--daemon-socket", d.socket, "--to", unrelatedTarget, "--timeout", timeout.String(), "--count", "0"}, extra...)
	tr, err := b.kids.start(strings.TrimSpace("skbtrail trace "+strings.Join(extra, " ")), argv...)
	if err == nil {
		err = tr.waitOutput(ctx, b.cfg.traceStart, "skbtrail: tracing")
	}
	if err != nil {
		if tr != nil {
			_ = b.kids.stop(tr)
		}
		return nil, errors.Join(err, b.stopDaemon(d))
	}
	note := b.daemonNote(d) // now: a daemon may attach programs only while a trace runs
	return &attachment{
		owner: d.c.pid(),
		pids:  []int{d.c.pid(), tr.pid()},
		check: func() error {
			if tr.exited() {
				return fmt.Errorf("skbtrail trace ended during the run (%v):\n%s", tr.err, indent(tr.out.String()))
			}
			if d.c.exited() {
				return fmt.Errorf("skbtrail daemon exited during the run (%v):\n%s", d.c.err, indent(d.c.out.String()))
			}
			return nil
		},
		detach: func() (string, error) {
			// the trace ends on SIGTERM with "no matching packet" (exit 3)
			_ = b.kids.stop(tr)
			return note, b.stopDaemon(d)
		},
	}, nil
}

var tcpdumpCounts = regexp.MustCompile(`(\d+) packets captured[\s\S]*?(\d+) packets dropped by kernel`)

func (b *runner) attachTcpdump(ctx context.Context) (*attachment, error) {
	var dumps []*child
	stopAll := func() []string {
		var notes []string
		for _, c := range dumps {
			_ = b.kids.stop(c)
			if m := tcpdumpCounts.FindStringSubmatch(c.out.String()); m != nil {
				notes = append(notes, fmt.Sprintf("%s: %s captured, %s dropped", c.name, m[1], m[2]))
			}
		}
		return notes
	}
	for _, ns := range []string{b.lab.NodeA, b.lab.NodeB} {
		c, err := b.kids.start("tcpdump "+strings.TrimPrefix(ns, b.lab.Prefix+"-"), "ip", "netns", "exec", ns,
			"tcpdump", "-i", "any", "-n", "-w", "/dev/null")
		if err == nil {
			dumps = append(dumps, c)
			err = c.waitOutput(ctx, 20*time.Second, "listening on")
		}
		if err != nil {
			stopAll()
			return nil, err
		}
	}
	return &attachment{
		check: func() error {
			for _, c := range dumps {
				if c.exited() {
					return fmt.Errorf("%s exited during the run (%v):\n%s", c.name, c.err, indent(c.out.String()))
				}
			}
			return nil
		},
		detach: func() (string, error) {
			notes := stopAll()
			if len(notes) == 0 {
				return "", nil
			}
			return "  [" + strings.Join(notes, "; ") + "]", nil
		},
	}, nil
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// printThroughput prints the table and reports whether a target was missed.
// Runs during which other skbtrail programs were loaded (marked *) are left
// out of a mode's median when the mode has clean runs.
func (b *runner) printThroughput(results []runResult) (missed bool) {
	type modeRuns struct {
		all, clean []float64 // Gbit/s
		cells      []string  // per round, * for tainted runs
		paired     []string  // ratio to the baseline of the same round
		cpu        []float64
	}
	runs := map[string]*modeRuns{}
	base := map[int]runResult{}
	tainted := false
	for _, r := range results {
		if r.mode == "a" {
			base[r.round] = r
		}
		tainted = tainted || len(r.foreign) > 0
	}
	for _, r := range results {
		mr := runs[r.mode]
		if mr == nil {
			mr = &modeRuns{}
			runs[r.mode] = mr
		}
		g := r.res.bps / 1e9
		mr.all = append(mr.all, g)
		mark := ""
		if len(r.foreign) > 0 {
			mark = "*"
		} else {
			mr.clean = append(mr.clean, g)
		}
		mr.cells = append(mr.cells, fmt.Sprintf("%.2f%s", g, mark))
		pm := ""
		if len(r.foreign) > 0 || len(base[r.round].foreign) > 0 {
			pm = "*"
		}
		mr.paired = append(mr.paired, fmt.Sprintf("%.3f%s", r.res.bps/base[r.round].res.bps, pm))
		if r.cpu >= 0 {
			mr.cpu = append(mr.cpu, r.cpu*100)
		}
	}
	used := func(mr *modeRuns) []float64 {
		if len(mr.clean) > 0 {
			return mr.clean
		}
		return mr.all
	}
	baseMed := median(used(runs["a"]))
	spread := 0.0
	if bs := used(runs["a"]); len(bs) > 1 {
		spread = (slices.Max(bs) - slices.Min(bs)) / baseMed
	}
	fmt.Fprintln(b.out)
	var t table
	t.add("mode", "Gbit/s (median)", "runs used", "per round", "ratio vs baseline", "paired ratios", "cost", "target", "result", "skbtrail CPU")
	for _, m := range b.modes {
		mr := runs[m.key]
		med := median(used(mr))
		ratio := med / baseMed
		target, result := "-", "reference"
		if m.key == "a" {
			result = "baseline"
		}
		if m.target > 0 {
			target = fmt.Sprintf("< %.0f%%", m.target*100)
			result = "OK"
			if 1-ratio >= m.target {
				result, missed = "MISSED", true
				if 1-ratio < spread {
					result = "MISSED (within noise)"
				}
			}
		}
		c := "-"
		if len(mr.cpu) > 0 {
			c = fmt.Sprintf("%.1f%%", median(mr.cpu))
		}
		t.addf("%s) %s\t%.2f\t%d/%d\t%s\t%.3f\t%s\t%+.1f%%\t%s\t%s\t%s", m.key, m.name, med, len(used(mr)), len(mr.all),
			strings.Join(mr.cells, " "), ratio, strings.Join(mr.paired, " "), (1-ratio)*100, target, result, c)
	}
	t.print(b.out)
	fmt.Fprintln(b.out, "cost = 1 - ratio of the medians (mode / baseline); paired ratios: each round's run / that round's baseline;")
	fmt.Fprintln(b.out, "skbtrail CPU: user + system time of the skbtrail processes (daemon, trace) in % of one core, BPF programs not included (they run in the packet's context)")
	if spread > 0 {
		fmt.Fprintf(b.out, "baseline spread between rounds: %.1f%% of its median; cost differences smaller than that are within the noise\n", spread*100)
	}
	if tainted {
		fmt.Fprintln(b.out, "WARNING: runs marked * had other skbtrail BPF programs loaded (someone else's trace or daemon; see the log), which taxed")
		fmt.Fprintln(b.out, "that run's packets too: they are left out of the medians where the mode has clean runs (runs used)")
	}
	return missed
}

// profileMode runs a mode once more with the kernel's BPF run-time
// accounting on and prints what each of the daemon's programs cost. It is a
// separate run because the accounting itself (two clock reads per program
// run) costs throughput and would inflate the cost of the measured modes.
func (b *runner) profileMode(ctx context.Context, m mode) error {
	a, err := m.attach(ctx)
	if err != nil {
		return err
	}
	detached := false
	defer func() {
		if !detached {
			_, _ = a.detach()
		}
	}()
	ids, ours, err := a.programs()
	if err != nil {
		return err
	}
	foreign := b.waitQuiet(ctx, ours)
	sysBefore := sysctlValue("/proc/sys/kernel/bpf_stats_enabled")
	stats, err := enableStats()
	if err != nil {
		return err
	}
	defer stats.Close()
	before, err := snapshot(ids)
	if err != nil {
		return err
	}
	watch := watchForeign(ours)
	t0 := time.Now()
	res, err := b.iperf(ctx, b.cfg.profile, b.cfg.omit)
	foreign = mergeUnique(foreign, watch())
	if err != nil {
		return err
	}
	wall := time.Since(t0)
	after, err := snapshot(ids)
	if err != nil {
		return err
	}
	if err := stats.Close(); err != nil {
		return err
	}
	if err := a.check(); err != nil {
		return err
	}
	detached = true
	if _, err := a.detach(); err != nil {
		return err
	}
	ds := deltas(before, after)
	fmt.Fprintf(b.out, "\n== in-kernel cost, mode %s) %s: one iperf3 run of %v with BPF run-time stats on (%.2f Gbit/s, not counted above)\n",
		m.key, m.name, (b.cfg.profile + b.cfg.omit).Round(time.Second), res.bps/1e9)
	fmt.Fprintf(b.out, "stats via BPF_ENABLE_STATS for this run only (kernel.bpf_stats_enabled was %s, is %s again); %d programs held by skbtrail (pid %d)\n",
		sysBefore, sysctlValue("/proc/sys/kernel/bpf_stats_enabled"), len(ids), a.owner)
	var t table
	t.add("program", "type", "runs", "runs/s", "avg ns/run", "CPU ms")
	var total time.Duration
	var runs uint64
	for _, d := range ds {
		if d.runs == 0 {
			continue
		}
		total += d.runtime
		runs += d.runs
		t.addf("%s\t%s\t%d\t%.0f\t%.0f\t%.1f", d.name, d.typ, d.runs, float64(d.runs)/wall.Seconds(), d.avgNs(),
			float64(d.runtime.Microseconds())/1000)
	}
	avg := 0.0
	if runs > 0 {
		avg = float64(total.Nanoseconds()) / float64(runs)
	}
	t.addf("all\t\t%d\t%.0f\t%.0f\t%.1f", runs, float64(runs)/wall.Seconds(), avg, float64(total.Microseconds())/1000)
	t.print(b.out)
	fmt.Fprintf(b.out, "BPF time: %.1f ms per second of run = %.2f%% of one core (%.2f%% of the machine's %d)\n",
		float64(total.Microseconds())/1000/wall.Seconds(), 100*total.Seconds()/wall.Seconds(),
		100*total.Seconds()/wall.Seconds()/float64(runtime.NumCPU()), runtime.NumCPU())
	if len(foreign) > 0 {
		fmt.Fprintf(b.out, "WARNING: other skbtrail programs were loaded during this run: %s\n", short(foreign))
	}
	return nil
}
