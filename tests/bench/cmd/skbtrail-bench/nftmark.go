package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/pkg/nftrace"
)

// nftmark addresses: a veth pair between two namespaces (TEST-NET-2).
const (
	markClient = "198.51.100.1"
	markServer = "198.51.100.2"
	markOther  = "198.51.100.99" // the source of the "other" trace's flow: nobody
	markPort   = 5202
)

// markCounter counts the skbs the server namespace receives.
const markCounter = `table inet sbt_bench_count {
	chain pre {
		type filter hook prerouting priority -400; policy accept;
		counter
	}
}
`

type markMode struct {
	name  string
	match *nftrace.Match // nil: no marking table
}

// cmdNftmark measures what the nftrace marking rule costs per packet: an
// iperf3 stream between two namespaces (each with a few nf_tables rules)
// without marking tables, with tables marking another flow (what other
// traffic pays: the match) and with tables marking this very flow (the
// traced flow: every packet traced, trace events read by a listener).
func cmdNftmark(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("nftmark", stderr)
	d := fs.Duration("duration", 5*time.Second, "iperf3 run length")
	rounds := fs.Int("rounds", 3, "runs per mode and protocol (median)")
	prefix := fs.String("prefix", "", "namespace prefix (default: nm + 4 random hex digits)")
	withIperf := fs.Bool("iperf", true, "run the iperf3 part (the loopback send-cost part always runs)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := requireRoot("skbtrail-bench nftmark"); err != nil {
		return err
	}
	if *prefix == "" {
		var r [2]byte
		_, _ = rand.Read(r[:])
		*prefix = "nm" + hex.EncodeToString(r[:])
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, "skbtrail-bench: "+format+"\n", a...) }
	cli, srv := *prefix+"-ma", *prefix+"-mb"
	defer deleteNetns([]string{cli, srv})
	if err := markLab(ctx, *prefix, cli, srv); err != nil {
		return err
	}
	if !*withIperf {
		return sendCostTable(cli, stdout, logf)
	}
	server, err := startChild("iperf3 server", "ip", "netns", "exec", srv, "iperf3", "-s", "-B", markServer, "-p", strconv.Itoa(markPort))
	if err != nil {
		return err
	}
	defer func() { _ = server.stop(syscall.SIGTERM, 5*time.Second) }()
	time.Sleep(500 * time.Millisecond)
	src := netip.MustParsePrefix(markClient + "/32")
	other := netip.MustParsePrefix(markOther + "/32")
	t := &table{}
	t.add("traffic", "marking", "Gbit/s", "skb/s (server prerouting)", "ns per skb vs none", "trace events read per run", "lost (ENOBUFS) per run")
	for _, proto := range []string{"tcp", "udp 64 B"} {
		p := uint8(unix.IPPROTO_TCP)
		if proto != "tcp" {
			p = unix.IPPROTO_UDP
		}
		modes := []markMode{
			{"none", nil},
			{"other flow marked (what other traffic pays)", &nftrace.Match{Proto: p, Src: other}},
			{"this flow marked (the traced flow)", &nftrace.Match{Proto: p, Src: src}},
		}
		runs := make([][]markResult, len(modes))
		for r := 0; r < *rounds; r++ {
			for k := range modes {
				i := (k + r) % len(modes) // the order rotates between rounds
				res, err := markRun(ctx, cli, srv, proto, modes[i], *d)
				if err != nil {
					return fmt.Errorf("%s, %s: %w", proto, modes[i].name, err)
				}
				logf("%s / %s: %.2f Gbit/s, %.0f skb/s", proto, modes[i].name, res.bps/1e9, res.pps)
				runs[i] = append(runs[i], res)
			}
		}
		var basePPS float64
		for i, m := range modes {
			var bps, pps []float64
			var events, lost uint64
			for _, res := range runs[i] {
				bps, pps = append(bps, res.bps), append(pps, res.pps)
				events, lost = events+res.events, lost+res.lost
			}
			mb, mp := median(bps), median(pps)
			cost := "-"
			if m.match == nil {
				basePPS = mp
			} else if basePPS > 0 && mp > 0 {
				cost = fmt.Sprintf("%+.0f", (1/mp-1/basePPS)*1e9)
			}
			t.addf("%s\t%s\t%.2f\t%.0f\t%s\t%d\t%d", proto, m.name, mb/1e9, mp, cost, events/uint64(*rounds), lost/uint64(*rounds))
		}
	}
	t.print(stdout)
	return sendCostTable(cli, stdout, logf)
}

// sendCostTable measures and prints the CPU per datagram sent over the
// client namespace's loopback, without and with marking tables.
func sendCostTable(ns string, stdout io.Writer, logf func(string, ...any)) error {
	modes := []markMode{
		{"none", nil},
		{"other flow marked (what other traffic pays)", &nftrace.Match{Proto: unix.IPPROTO_UDP, Src: netip.MustParsePrefix(markOther + "/32")}},
		{"this flow marked (the traced flow)", &nftrace.Match{Proto: unix.IPPROTO_UDP, Src: netip.MustParsePrefix("127.0.0.1/32")}},
	}
	const packets, rounds = 100000, 11
	logf("loopback send cost: %d rounds of %d datagrams per mode", rounds, packets)
	res, err := measureSendCost(ns, modes, packets, rounds)
	if err != nil {
		return err
	}
	t := &table{}
	t.add("loopback UDP 64 B, CPU of the sending thread", "ns per packet (median)", "vs none", "trace events read per round", "lost (ENOBUFS) per round")
	for i, m := range modes {
		d := "-"
		if i > 0 {
			d = fmt.Sprintf("%+.0f ns", res[i].nsPerPacket-res[0].nsPerPacket)
		}
		t.addf("%s\t%.0f\t%s\t%d\t%d", m.name, res[i].nsPerPacket, d, res[i].events, res[i].dropped)
	}
	fmt.Fprintln(stdout)
	t.print(stdout)
	return nil
}

// markLab makes the two namespaces, the veth between them, each side's
// few rules (denseRules) and the server's skb counter.
func markLab(ctx context.Context, prefix, cli, srv string) error {
	rules := filepath.Join(os.TempDir(), prefix+"-rules.nft")
	count := filepath.Join(os.TempDir(), prefix+"-count.nft")
	// the pods' rules, letting iperf3's port in
	podRules := strings.Replace(denseRules, "8080 }", fmt.Sprintf("8080, %d }", markPort), 1)
	if err := os.WriteFile(rules, []byte(podRules), 0o600); err != nil {
		return err
	}
	defer os.Remove(rules)
	if err := os.WriteFile(count, []byte(markCounter), 0o600); err != nil {
		return err
	}
	defer os.Remove(count)
	steps := [][]string{
		{"ip", "netns", "add", cli}, {"ip", "netns", "add", srv},
		{"ip", "-n", cli, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", srv},
		{"ip", "-n", cli, "addr", "add", markClient + "/24", "dev", "eth0"},
		{"ip", "-n", srv, "addr", "add", markServer + "/24", "dev", "eth0"},
		{"ip", "-n", cli, "link", "set", "eth0", "up"}, {"ip", "-n", srv, "link", "set", "eth0", "up"},
		{"ip", "-n", cli, "link", "set", "lo", "up"}, {"ip", "-n", srv, "link", "set", "lo", "up"},
		{"ip", "netns", "exec", cli, "nft", "-f", rules}, {"ip", "netns", "exec", srv, "nft", "-f", rules},
		{"ip", "netns", "exec", srv, "nft", "-f", count},
	}
	for _, s := range steps {
		if err := runCmd(ctx, s...); err != nil {
			return err
		}
	}
	return nil
}

type markResult struct {
	bps, pps     float64
	events, lost uint64
}

// markRun runs iperf3 once with mode m's marking tables (and listeners) in
// both namespaces.
func markRun(ctx context.Context, cli, srv, proto string, m markMode, d time.Duration) (res markResult, err error) {
	if m.match != nil {
		for _, ns := range []string{cli, srv} {
			f, err := os.Open("/run/netns/" + ns)
			if err != nil {
				return res, err
			}
			l, err := nftrace.Listen(int(f.Fd()))
			if err != nil {
				f.Close()
				return res, err
			}
			mk, err := nftrace.NewMarker(int(f.Fd()), *m.match)
			f.Close()
			if err != nil {
				l.Close()
				return res, err
			}
			defer func() {
				mk.Close()
				l.Close()
				res.events += l.Events.Load()
				res.lost += l.Lost.Load()
			}()
		}
	}
	before, err := skbCount(ctx, srv)
	if err != nil {
		return res, err
	}
	args := []string{"netns", "exec", cli, "iperf3", "-c", markServer, "-p", strconv.Itoa(markPort), "-t", strconv.Itoa(int(d.Seconds())), "-J"}
	if proto != "tcp" {
		args = append(args, "-u", "-b", "0", "-l", "64")
	}
	ctx2, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx2, "ip", args...).Output()
	took := time.Since(start)
	if err != nil {
		return res, fmt.Errorf("iperf3: %v: %s", err, out)
	}
	after, err := skbCount(ctx, srv)
	if err != nil {
		return res, err
	}
	var j struct {
		End struct {
			SumReceived struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
			Sum struct {
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum"`
		} `json:"end"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return res, fmt.Errorf("iperf3 output: %w", err)
	}
	res.bps = j.End.SumReceived.BitsPerSecond
	if res.bps == 0 {
		res.bps = j.End.Sum.BitsPerSecond
	}
	res.pps = float64(after-before) / took.Seconds()
	return res, nil
}

var packetsRE = regexp.MustCompile(`counter packets (\d+)`)

// skbCount reads the server's prerouting skb counter.
func skbCount(ctx context.Context, ns string) (uint64, error) {
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "list", "table", "inet", "sbt_bench_count").CombinedOutput()
	if err != nil {
		return 0, fmt.Errorf("read the skb counter: %v: %s", err, strings.TrimSpace(string(out)))
	}
	m := packetsRE.FindSubmatch(out)
	if m == nil {
		return 0, errors.New("read the skb counter: no counter in the table")
	}
	return strconv.ParseUint(string(m[1]), 10, 64)
}
