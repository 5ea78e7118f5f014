package nfrules

import (
	"os"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

func nodeBSnapshot(t *testing.T) *Snapshot {
	t.Helper()
	read := func(name string) string {
		b, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	nft, err := ParseNftJSON([]byte(read("nft-node-b.json")), read("nft-node-b.txt"))
	if err != nil {
		t.Fatal(err)
	}
	ipt, err := ParseIptablesSave("nft", read("iptables-nft-save-node-b.txt"))
	if err != nil {
		t.Fatal(err)
	}
	return &Snapshot{NFT: ipt, Nft: nft}
}

func TestFromTrace(t *testing.T) {
	after := nodeBSnapshot(t)
	cases := []struct {
		name string
		in   TracedDrop
		want Decision
	}{
		{"iptables-nft rule as iptables-save prints it", TracedDrop{Family: "ip", Table: "filter", Chain: "FORWARD", Handle: 3},
			Decision{Family: "ip", Source: "iptables-nft", Table: "filter", Chain: "FORWARD", Handle: 3, Exact: true, Verdict: "REJECT",
				Rule: "-A FORWARD -d 10.244.1.2/32 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset"}},
		{"iptables-nft policy", TracedDrop{Family: "ip", Table: "filter", Chain: "FORWARD", Policy: true},
			Decision{Family: "ip", Source: "iptables-nft", Table: "filter", Chain: "FORWARD", Exact: true, Verdict: "policy DROP", Rule: "policy DROP"}},
		{"native rule as nft prints it", TracedDrop{Family: "inet", Table: "sbt_fault", Chain: "fwd", Handle: 2},
			Decision{Family: "inet", Source: "nft", Table: "sbt_fault", Chain: "fwd", Handle: 2, Exact: true, Verdict: "DROP",
				Rule: "ip daddr 10.244.1.2 tcp dport 80 drop"}},
		{"rule gone since: the handle", TracedDrop{Family: "inet", Table: "sbt_fault", Chain: "fwd", Handle: 9},
			Decision{Family: "inet", Source: "nft", Table: "sbt_fault", Chain: "fwd", Handle: 9, Exact: true, Verdict: "DROP", Rule: "handle 9"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d, hook, ok := FromTrace(c.in, after)
			if d != c.want {
				t.Errorf("decision %+v\nwant     %+v", d, c.want)
			}
			if !ok || hook != journey.HookForward {
				t.Errorf("hook %d %v, want FORWARD", hook, ok)
			}
		})
	}
	if _, _, ok := FromTrace(TracedDrop{Family: "inet", Table: "x", Chain: "y", Handle: 1}, nil); ok {
		t.Error("a hook without rules to read")
	}
}

// ip6tables-nft's tables (family ip6) are printed as ip6tables-save prints
// them, even where iptables-nft translated the match into native
// expressions (rpfilter -> fib).
func TestFromTraceIP6tablesNFT(t *testing.T) {
	ipt6, err := ParseIptablesSave("nft", "*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n-A PREROUTING -m rpfilter --invert -j DROP\nCOMMIT\n")
	if err != nil {
		t.Fatal(err)
	}
	after := &Snapshot{NFT6: ipt6, Nft: &NftRuleset{Chains: map[string]*NftChain{
		chainKey("ip6", "raw", "PREROUTING"): {Hook: "prerouting", Rules: []NftRule{{Handle: 2, Text: "fib saddr . iif oif 0 counter packets 1 bytes 80 drop"}}},
	}}}
	d, hook, ok := FromTrace(TracedDrop{Family: "ip6", Table: "raw", Chain: "PREROUTING", Handle: 2}, after)
	want := Decision{Family: "ip6", Source: "iptables-nft", Table: "raw", Chain: "PREROUTING", Handle: 2, Exact: true, Verdict: "DROP",
		Rule: "-A PREROUTING -m rpfilter --invert -j DROP"}
	if d != want || !ok || hook != journey.HookPreRouting {
		t.Errorf("decision %+v (hook %d %v)\nwant     %+v", d, hook, ok, want)
	}
	// the same table name in an IPv4-only snapshot is native nft
	if d, _, _ := FromTrace(TracedDrop{Family: "ip6", Table: "raw", Chain: "PREROUTING", Handle: 2}, &Snapshot{Nft: after.Nft}); d.Source != "nft" {
		t.Errorf("without ip6tables-nft rules: source %q, want nft", d.Source)
	}
}
