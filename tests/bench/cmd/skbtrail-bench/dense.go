package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/skbtrail/skbtrail/tests/lab"
)

// denseRules are the few rules each pod namespace of the dense node holds
// (a NetworkPolicy-like table).
const denseRules = `table inet pod_policy {
	set allowed { type inet_service; elements = { 80, 443, 8080 } }
	chain input {
		type filter hook input priority 0; policy accept;
		ct state established,related accept
		tcp dport != @allowed ct state new counter drop
		udp dport 9 drop
	}
}
`

type denseConfig struct {
	skbtrail, old, prefix string
	pods, rounds          int
}

// cmdDense measures how long `skbtrail trace` (through a daemon) takes to
// be ready on a dense node: the lab plus --pods namespaces with a few
// nf_tables rules each, for --probe and for a passive trace.
func cmdDense(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("dense", stderr)
	var cfg denseConfig
	fs.StringVar(&cfg.skbtrail, "skbtrail", "bin/skbtrail", "the skbtrail binary")
	fs.StringVar(&cfg.old, "old", "", "another skbtrail binary to compare with (e.g. built from main)")
	fs.IntVar(&cfg.pods, "pods", 250, "pod namespaces added to the lab, each with a few nf_tables rules")
	fs.IntVar(&cfg.rounds, "rounds", 5, "traces per mode (the median is reported)")
	fs.StringVar(&cfg.prefix, "prefix", "", "lab prefix (default: dn + 4 random hex digits)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if cfg.pods < 1 || cfg.rounds < 1 {
		return errors.New("dense: --pods and --rounds must be >= 1")
	}
	if err := requireRoot("skbtrail-bench dense"); err != nil {
		return err
	}
	if cfg.prefix == "" {
		var r [2]byte
		_, _ = rand.Read(r[:])
		cfg.prefix = "dn" + hex.EncodeToString(r[:])
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "skbtrail-bench: "+format+"\n", a...) }
	l, down, err := upLab(ctx, cfg.prefix, logf)
	if err != nil {
		return err
	}
	defer down()
	pods, err := addDensePods(ctx, cfg.prefix, cfg.pods)
	defer deleteNetns(pods)
	if err != nil {
		return err
	}
	logf("%d pod namespaces with %d nf_tables rules each", len(pods), 3)
	t := &table{}
	t.add("binary", "namespaces", "mode", "ready (median)", "min", "max", "target", "result")
	missed := false
	bins := []struct{ name, path string }{{"this", cfg.skbtrail}}
	if cfg.old != "" {
		bins = append(bins, struct{ name, path string }{"old", cfg.old})
	}
	nsCount := len(pods) + len(l.Namespaces())
	for _, b := range bins {
		rows, err := denseReady(ctx, b.path, l, cfg.rounds, logf)
		if err != nil {
			return fmt.Errorf("%s binary: %w", b.name, err)
		}
		for _, r := range rows {
			target, result := "", "reference"
			if b.name == "this" {
				target, result = fmt.Sprintf("< %s", r.target), "OK"
				if r.median >= r.target {
					result, missed = "MISSED", true
				}
			}
			t.addf("%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s", b.name, nsCount, r.mode, ms(r.median), ms(r.min), ms(r.max), target, result)
		}
	}
	t.print(stdout)
	if missed {
		return errMissed
	}
	return nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%d ms", d.Milliseconds()) }

type readyRow struct {
	mode             string
	median, min, max time.Duration
	target           time.Duration
}

// denseReady starts a daemon of bin and times the ready line of probe and
// passive traces through it.
func denseReady(ctx context.Context, bin string, l *lab.Lab, rounds int, logf func(string, ...any)) ([]readyRow, error) {
	tmp, err := os.MkdirTemp("", "skbtrail-bench-dense-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	metrics := ln.Addr().String()
	ln.Close()
	sock := filepath.Join(tmp, "skbtrail.sock")
	d, err := startChild("skbtrail daemon", bin, "daemon", "--listen", "unix://"+sock, "--metrics", metrics, "--events", filepath.Join(tmp, "events.ndjson"))
	if err != nil {
		return nil, err
	}
	defer func() { _ = d.stop(syscall.SIGTERM, 10*time.Second) }()
	if err := d.waitFor(ctx, 60*time.Second, "the daemon's socket", func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		return nil, err
	}
	base := []string{"trace", "--daemon-socket", sock, "--json", "--from-netns", l.PodA, "--to", l.WebService.Addr()}
	modes := []struct {
		name   string
		args   []string
		target time.Duration
	}{
		{"--probe", []string{"--probe", "--timeout", "2s"}, time.Second},
		{"passive", []string{"--timeout", "500ms"}, 500 * time.Millisecond},
	}
	var rows []readyRow
	for _, m := range modes {
		var took []float64
		for i := 0; i <= rounds; i++ {
			dt, line, err := timeReady(ctx, bin, append(append([]string{}, base...), m.args...))
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.name, err)
			}
			if i == 0 {
				logf("%s %s: ready line %q (warm-up, not counted)", filepath.Base(bin), m.name, line)
				continue
			}
			took = append(took, float64(dt))
		}
		lo, hi := took[0], took[0]
		for _, x := range took {
			lo, hi = min(lo, x), max(hi, x)
		}
		rows = append(rows, readyRow{mode: m.name, median: time.Duration(median(took)), min: time.Duration(lo), max: time.Duration(hi), target: m.target})
	}
	return rows, nil
}

// timeReady runs one trace and returns the time from its start to its
// ready line (it then runs to its end).
func timeReady(ctx context.Context, bin string, args []string) (time.Duration, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout = io.Discard
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return 0, "", err
	}
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, "", err
	}
	var took time.Duration
	var line string
	var all strings.Builder
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		all.WriteString(sc.Text() + "\n")
		if took == 0 && strings.HasPrefix(sc.Text(), "skbtrail: tracing") {
			took, line = time.Since(start), sc.Text()
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return 0, "", err
	}
	if took == 0 {
		return 0, "", fmt.Errorf("no ready line (%v):\n%s", err, indent(all.String()))
	}
	return took, line, nil
}

// addDensePods creates n namespaces prefix-dNNN with lo up and denseRules.
func addDensePods(ctx context.Context, prefix string, n int) ([]string, error) {
	rules := filepath.Join(os.TempDir(), prefix+"-pod-rules.nft")
	if err := os.WriteFile(rules, []byte(denseRules), 0o600); err != nil {
		return nil, err
	}
	defer os.Remove(rules)
	names := make([]string, n)
	var mu sync.Mutex
	var made []string
	var errs []error
	work := make(chan string)
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range work {
				err := runCmd(ctx, "ip", "netns", "add", name)
				mu.Lock()
				if err == nil {
					made = append(made, name)
				}
				mu.Unlock()
				if err == nil {
					err = errors.Join(runCmd(ctx, "ip", "-n", name, "link", "set", "lo", "up"),
						runCmd(ctx, "ip", "netns", "exec", name, "nft", "-f", rules))
				}
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for i := range names {
		names[i] = fmt.Sprintf("%s-d%03d", prefix, i)
		work <- names[i]
	}
	close(work)
	wg.Wait()
	return made, errors.Join(errs...)
}

func deleteNetns(names []string) {
	for _, n := range names {
		_ = exec.Command("ip", "netns", "del", n).Run()
	}
}

func runCmd(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
