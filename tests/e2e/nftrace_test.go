package e2e

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// nftScript loads an nft script into ns (a file: nft 1.0.6 reads no stdin
// script through ip netns exec reliably).
func nftScript(t *testing.T, l *lab.Lab, ns, script string) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "rules.nft")
	if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := l.Run(ns, "nft", "-f", f); err != nil {
		t.Fatalf("nft -f in %s: %v %s", ns, err, out)
	}
}

// busySYNs sends TCP SYNs from pod-a to pod-b port 81 (a rule drops them)
// until stop is called, from 4 goroutines: traffic of another flow dropped
// in the same chain at the same time as the traced packet. It returns how
// many connection attempts were made.
func busySYNs(t *testing.T, l *lab.Lab) (stop func() int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	var wg sync.WaitGroup
	var n atomic.Int64
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				n.Add(1)
				_ = l.Dial(ctx, l.PodA, l.PodBIP+":81", 20*time.Millisecond) // dropped: times out
			}
		}()
	}
	return func() int64 { cancel(); wg.Wait(); return n.Load() }
}

// Issue 15: two rules of the same chain drop at the same time, one the
// traced flow, one busy other traffic (placed first, so its counter rises
// first and more): the verdict names the traced packet's rule, from
// nftrace, on iptables-nft and on a native nftables table.
func TestNftraceConcurrentDrops(t *testing.T) {
	cases := []struct {
		name    string
		install func(t *testing.T, l *lab.Lab)
		table   string
		chain   string
		rule    string
	}{
		{"iptables-nft", func(t *testing.T, l *lab.Lab) {
			for _, r := range [][]string{
				{"iptables-nft", "-w", "10", "-I", "FORWARD", "-d", lab.PodBIP + "/32", "-p", "tcp", "-m", "tcp", "--dport", "80", "-j", "DROP"},
				{"iptables-nft", "-w", "10", "-I", "FORWARD", "-d", lab.PodBIP + "/32", "-p", "tcp", "-m", "tcp", "--dport", "81", "-j", "DROP"},
			} {
				if out, err := l.Run(l.NodeB, r...); err != nil {
					t.Fatalf("%v: %v %s", r, err, out)
				}
			}
		}, "filter", "FORWARD", "-A FORWARD -d 10.244.1.2/32 -p tcp -m tcp --dport 80 -j DROP"},
		{"nftables", func(t *testing.T, l *lab.Lab) {
			nftScript(t, l, l.NodeB, `table inet sbt_busy {
	chain forward_drop {
		type filter hook forward priority 0; policy accept;
		ip daddr 10.244.1.2 tcp dport 81 drop
		ip daddr 10.244.1.2 tcp dport 80 drop
	}
}
`)
		}, "inet sbt_busy", "forward_drop", "ip daddr 10.244.1.2 tcp dport 80 drop"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Iptables: "iptables-nft"})
			c.install(t, l)
			stop := busySYNs(t, l)
			time.Sleep(200 * time.Millisecond) // the other flow is dropping before the trace starts
			j, res := probeService(t, l)
			attempts := stop()
			if attempts < 10 {
				t.Fatalf("only %d busy connection attempts: the other traffic did not run", attempts)
			}
			v := j.Verdict
			if res.exit != 1 || v.Kind != journey.Dropped || v.Netns != l.NodeB || v.Reason != "NETFILTER_DROP" {
				t.Fatalf("exit %d verdict %+v, want dropped in %s", res.exit, v, l.NodeB)
			}
			if v.Hook != "FORWARD" || v.Table != c.table || v.Chain != c.chain || v.Rule != c.rule {
				t.Errorf("attribution hook=%q table=%q chain=%q rule=%q, want FORWARD %q %q %q", v.Hook, v.Table, v.Chain, v.Rule, c.table, c.chain, c.rule)
			}
			if v.Attribution != "nftrace" || v.RuleHandle == 0 {
				t.Errorf("attribution %q handle %d, want nftrace with a handle", v.Attribution, v.RuleHandle)
			}
			if !hasFinding(j, "NF_RULE_DROP") {
				t.Errorf("findings %v, want NF_RULE_DROP", findingCodes(j))
			}
		})
	}
}

// Issue 15: rules whose matches skbtrail does not evaluate by reading them
// (a set lookup, a packet mark, a conntrack state): the trace still names
// the rule exactly.
func TestNftraceOpaqueMatches(t *testing.T) {
	cases := []struct {
		name    string
		install func(t *testing.T, l *lab.Lab)
		table   string
		chain   string
		words   []string
	}{
		{"iptables-nft", func(t *testing.T, l *lab.Lab) {
			r := []string{"iptables-nft", "-w", "10", "-I", "FORWARD", "-p", "tcp", "-m", "conntrack", "--ctstate", "NEW",
				"-m", "mark", "--mark", "0x0/0xff", "-m", "tcp", "--dport", "80", "-j", "DROP"}
			if out, err := l.Run(l.NodeB, r...); err != nil {
				t.Fatalf("%v: %v %s", r, err, out)
			}
		}, "filter", "FORWARD", []string{"-A FORWARD", "--ctstate NEW", "--mark 0x0/0xff", "-j DROP"}},
		{"nftables", func(t *testing.T, l *lab.Lab) {
			nftScript(t, l, l.NodeB, `table inet sbt_opaque {
	set blocked {
		type ipv4_addr . inet_service
		elements = { 10.244.1.2 . 80 }
	}
	chain forward_drop {
		type filter hook forward priority 0; policy accept;
		ct state new meta mark 0 ip daddr . tcp dport @blocked drop
	}
}
`)
		}, "inet sbt_opaque", "forward_drop", []string{"ct state new", "meta mark 0x00000000", "@blocked", "drop"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{Iptables: "iptables-nft"})
			c.install(t, l)
			j, res := probeService(t, l)
			v := j.Verdict
			if res.exit != 1 || v.Kind != journey.Dropped || v.Netns != l.NodeB || v.Reason != "NETFILTER_DROP" {
				t.Fatalf("exit %d verdict %+v, want dropped in %s", res.exit, v, l.NodeB)
			}
			if v.Hook != "FORWARD" || v.Table != c.table || v.Chain != c.chain {
				t.Errorf("attribution hook=%q table=%q chain=%q, want FORWARD %q %q", v.Hook, v.Table, v.Chain, c.table, c.chain)
			}
			for _, w := range c.words {
				if !strings.Contains(v.Rule, w) {
					t.Errorf("rule %q lacks %q", v.Rule, w)
				}
			}
			if v.Attribution != "nftrace" || v.RuleHandle == 0 {
				t.Errorf("attribution %q handle %d, want nftrace with a handle", v.Attribution, v.RuleHandle)
			}
		})
	}
}
