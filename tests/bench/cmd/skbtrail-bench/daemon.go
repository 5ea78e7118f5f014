package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/tests/lab"
)

// Targets of the daemon benchmark (issue 13).
const (
	idleTarget  = 0.1  // % of one core, idle daemon
	churnMargin = 0.10 // series and RSS back within 10% after the churn
)

type daemonConfig struct {
	skbtrail string
	idle     time.Duration
	churn    int
	settle   time.Duration
	prefix   string
}

// cmdDaemon measures the node agent itself: startup time, idle CPU and RSS
// with a lab's namespaces present, and a churn run (namespaces created,
// each dropping one packet, and deleted while the daemon runs) after which
// the metric series and RSS must come back.
func cmdDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("daemon", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg daemonConfig
	fs.StringVar(&cfg.skbtrail, "skbtrail", "bin/skbtrail", "the skbtrail binary")
	fs.DurationVar(&cfg.idle, "idle", 60*time.Second, "how long idle CPU is measured")
	fs.IntVar(&cfg.churn, "churn", 2000, "network namespaces created and deleted in the churn run (each drops one packet)")
	fs.DurationVar(&cfg.settle, "settle", 75*time.Second, "how long to wait after the churn for series and RSS to come back")
	fs.StringVar(&cfg.prefix, "prefix", "", "lab prefix (default: bd + 4 random hex digits)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("daemon: unexpected arguments %q", fs.Args())
	}
	if cfg.idle < 5*time.Second || cfg.churn < 1 {
		return errors.New("daemon: --idle must be >= 5s and --churn >= 1")
	}
	if err := requireRoot("skbtrail-bench daemon"); err != nil {
		return err
	}
	var err error
	if cfg.skbtrail, err = filepath.Abs(cfg.skbtrail); err != nil {
		return err
	}
	if cfg.prefix == "" {
		var r [2]byte
		_, _ = rand.Read(r[:])
		cfg.prefix = "bd" + hex.EncodeToString(r[:])
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "skbtrail-bench: "+format+"\n", a...) }

	logf("lab %s: up", cfg.prefix)
	_, down, err := upLab(ctx, cfg.prefix, logf)
	if err != nil {
		return err
	}
	defer down()
	tmp, err := os.MkdirTemp("", "skbtrail-bench-daemon-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	metricsAddr := ln.Addr().String()
	ln.Close()
	sock := filepath.Join(tmp, "skbtrail.sock")
	start := time.Now()
	d, err := startChild("skbtrail daemon", cfg.skbtrail, "daemon", "--listen", "unix://"+sock,
		"--metrics", metricsAddr, "--events", filepath.Join(tmp, "events.ndjson"))
	if err != nil {
		return err
	}
	defer func() { _ = d.stop(syscall.SIGTERM, 10*time.Second) }()
	if err := d.waitFor(ctx, 30*time.Second, "the daemon's socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		return err
	}
	startup := time.Since(start)
	logf("daemon pid %d answered on its socket after %s", d.pid(), startup.Round(time.Millisecond))

	// warm-up: a node that ran for a while has seen drops; the daemon's
	// fixed-size buffers (the reader -> processor channel is allocated
	// whole but its pages are touched only as it fills) are in use then.
	// A small churn, then wait until its series are forgotten, so the
	// churn below measures what grows with namespaces, not those buffers.
	rssCold, err := rssKiB(d.pid())
	if err != nil {
		return err
	}
	warm := min(cfg.churn/4, 500)
	logf("warm-up churn: %d namespaces", warm)
	if err := churn(ctx, warm); err != nil {
		return err
	}
	for deadline := time.Now().Add(cfg.settle); time.Now().Before(deadline); {
		_, unnamed, _, err := scrapeDrops(metricsAddr)
		if err != nil {
			return err
		}
		if unnamed == 0 {
			break
		}
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	// idle: nothing traced, no traffic; a few seconds to settle first
	select {
	case <-time.After(5 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu0, err := cpuTicks(d.pid())
	if err != nil {
		return err
	}
	t0 := time.Now()
	logf("idle for %s", cfg.idle)
	select {
	case <-time.After(cfg.idle):
	case <-ctx.Done():
		return ctx.Err()
	}
	cpu1, err := cpuTicks(d.pid())
	if err != nil {
		return err
	}
	idlePct := 100 * float64(cpu1-cpu0) / clockTicks / time.Since(t0).Seconds()
	rssIdle, err := rssKiB(d.pid())
	if err != nil {
		return err
	}
	vmRSS, _ := statusKiB(d.pid(), "VmRSS:")

	// churn
	seriesBefore, unnamedBefore, dropsBefore, err := scrapeDrops(metricsAddr)
	if err != nil {
		return err
	}
	logf("churn: %d namespaces, each dropping one packet", cfg.churn)
	tc := time.Now()
	if err := churn(ctx, cfg.churn); err != nil {
		return err
	}
	churnTook := time.Since(tc)
	var seriesPeak, unnamedPeak int
	var dropsAfter float64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		// the drops reach the metrics through the ring buffer and the processor
		if seriesPeak, unnamedPeak, dropsAfter, err = scrapeDrops(metricsAddr); err != nil {
			return err
		}
		if dropsAfter-dropsBefore >= float64(cfg.churn) {
			break
		}
	}
	rssPeak, _ := rssKiB(d.pid())
	logf("churn done in %s: %d drop series (were %d), %.0f drops counted; waiting up to %s for the series of vanished namespaces to go",
		churnTook.Round(time.Millisecond), seriesPeak, seriesBefore, dropsAfter-dropsBefore, cfg.settle)
	seriesAfter, unnamedAfter, rssAfter := seriesPeak, unnamedPeak, rssPeak
	// the churn's namespaces are unnamed (no process, no bind mount): their
	// series must all go; series of live namespaces (other pods dropping
	// packets meanwhile) may come and stay
	back := func() bool {
		return unnamedAfter <= unnamedBefore && float64(rssAfter) <= float64(rssIdle)*(1+churnMargin)
	}
	for deadline := time.Now().Add(cfg.settle); time.Now().Before(deadline); {
		if seriesAfter, unnamedAfter, _, err = scrapeDrops(metricsAddr); err != nil {
			return err
		}
		if rssAfter, err = rssKiB(d.pid()); err != nil {
			return err
		}
		if back() {
			break
		}
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	result := func(ok bool) string {
		if ok {
			return "OK"
		}
		return "MISSED"
	}
	fmt.Fprintf(stdout, "\n== daemon: the node agent itself (lab %s present: %d namespaces)\n", cfg.prefix, len(lab.NetnsNames(cfg.prefix)))
	fmt.Fprintf(stdout, "date %s, kernel %s, %d cores\n\n", time.Now().UTC().Format("2006-01-02 15:04 MST"), kernelRelease(), runtime.NumCPU())
	fmt.Fprintln(stdout, "| measure | value | target | result |")
	fmt.Fprintln(stdout, "| --- | ---: | ---: | ---: |")
	fmt.Fprintf(stdout, "| startup (exec -> API socket answers) | %s | - | - |\n", startup.Round(time.Millisecond))
	fmt.Fprintf(stdout, "| idle CPU over %s | %.3f%% of a core | <= %.1f%% | %s |\n", cfg.idle, idlePct, idleTarget, result(idlePct <= idleTarget))
	fmt.Fprintf(stdout, "| memory: RssAnon right after start / idle after a %d-namespace warm-up (VmRSS, with the binary's pages and the ring buffer mapping) | %.1f / %.1f MiB (%d MiB) | - | - |\n",
		warm, float64(rssCold)/1024, float64(rssIdle)/1024, vmRSS/1024)
	fmt.Fprintf(stdout, "| churn: %d namespaces created, one drop each, deleted | %s, %.0f drops counted | all counted | %s |\n",
		cfg.churn, churnTook.Round(time.Millisecond), dropsAfter-dropsBefore, result(dropsAfter-dropsBefore >= float64(cfg.churn)))
	fmt.Fprintf(stdout, "| drop series of unnamed namespaces: before / right after / settled | %d / %d / %d | settled <= before | %s |\n",
		unnamedBefore, unnamedPeak, unnamedAfter, result(unnamedAfter <= unnamedBefore))
	fmt.Fprintf(stdout, "| all drop series: before / right after / settled | %d / %d / %d | - | - |\n", seriesBefore, seriesPeak, seriesAfter)
	fmt.Fprintf(stdout, "| RssAnon: idle / right after / settled | %.1f / %.1f / %.1f MiB | settled <= +10%% | %s |\n",
		float64(rssIdle)/1024, float64(rssPeak)/1024, float64(rssAfter)/1024, result(float64(rssAfter) <= float64(rssIdle)*(1+churnMargin)))
	if idlePct > idleTarget || !back() || dropsAfter-dropsBefore < float64(cfg.churn) {
		return errMissed
	}
	return nil
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat's times (100 on Linux).
const clockTicks = 100

// cpuTicks is a process's user + system time in clock ticks.
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// the command name may hold spaces: fields start after its ')'
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return utime + stime, nil
}

// rssKiB is a process's anonymous resident memory (RssAnon: its heap and
// stacks; the binary's pages and the ring buffer mapping are file-backed
// and shared, not what it holds).
func rssKiB(pid int) (int, error) { return statusKiB(pid, "RssAnon:") }

// statusKiB reads one "Name: N kB" line of /proc/PID/status.
func statusKiB(pid int, field string) (int, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no %s", pid, field)
}

// scrapeDrops returns the number of skbtrail_drops_total and
// skbtrail_events_suppressed_total series, how many of them name a
// namespace only by inode (unnamed ones, like the churn's), and the sum of
// the drops.
func scrapeDrops(addr string) (series, unnamed int, drops float64, err error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, 0, 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, `netns="ino:`) {
			unnamed++
		}
		switch {
		case strings.HasPrefix(line, "skbtrail_drops_total{"):
			series++
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			drops += v
		case strings.HasPrefix(line, "skbtrail_events_suppressed_total{"):
			series++
		}
	}
	return series, unnamed, drops, sc.Err()
}

// churn creates n short-lived network namespaces, one after the other, on a
// locked thread: each gets its loopback up and one UDP datagram to a port
// nobody listens on (the kernel drops it: NO_SOCKET), then the thread goes
// back and the namespace, unreferenced, is freed. Nothing leaves the host.
func churn(ctx context.Context, n int) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// the thread is left locked: if going back fails, it must not be reused
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			errc <- err
			return
		}
		defer orig.Close()
		for i := 0; i < n && ctx.Err() == nil; i++ {
			err := oneNamespace()
			if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr != nil {
				errc <- fmt.Errorf("back to the original namespace: %w", serr)
				return
			}
			if err != nil {
				errc <- fmt.Errorf("namespace %d: %w", i, err)
				return
			}
		}
		runtime.UnlockOSThread()
		errc <- ctx.Err()
	}()
	return <-errc
}

func oneNamespace() error {
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	h, err := netlink.NewHandle()
	if err != nil {
		return err
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err != nil {
		return err
	}
	if err := h.LinkSetUp(lo); err != nil {
		return err
	}
	c, err := net.Dial("udp4", "127.0.0.1:9")
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte("skbtrail churn"))
	return err
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "?"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// upLab brings up the lab (at most 2 minutes); down takes it away and logs
// what it could not remove.
func upLab(ctx context.Context, prefix string, logf func(string, ...any)) (l *lab.Lab, down func(), err error) {
	upCtx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	if l, err = lab.Up(upCtx, lab.Config{Prefix: prefix, Logf: logf}); err != nil {
		return nil, nil, err
	}
	return l, func() {
		if err := l.Down(); err != nil {
			logf("lab down: %v", err)
		}
	}, nil
}
