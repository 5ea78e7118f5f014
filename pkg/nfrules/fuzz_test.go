package nfrules

import (
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/fuzztest"
)

// The testdata files are real outputs of the lab (tests/lab) on
// iptables v1.8.9 and nftables v1.0.6: node-a holds kube-proxy's rules,
// node-b the faults forward-drop (legacy), forward-drop-rule-nft plus a
// ctstate INVALID drop and a REJECT rule (nft), all with counters moved
// by a few connection attempts.

func testdata(tb testing.TB, pattern string) map[string][]byte {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join("testdata", pattern))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no testdata/%s: %v", pattern, err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

// formatSave writes rs back as `iptables-save -c` prints it.
func formatSave(rs *IptRuleset) string {
	var b strings.Builder
	for _, tn := range slices.Sorted(maps.Keys(rs.Tables)) {
		t := rs.Tables[tn]
		fmt.Fprintf(&b, "*%s\n", t.Name)
		names := slices.Sorted(maps.Keys(t.Chains))
		for _, cn := range names {
			c := t.Chains[cn]
			fmt.Fprintf(&b, ":%s %s [%d:0]\n", c.Name, c.Policy, c.Packets)
		}
		for _, cn := range names {
			for _, r := range t.Chains[cn].Rules {
				fmt.Fprintf(&b, "[%d:0] %s\n", r.Packets, r.Text)
			}
		}
		b.WriteString("COMMIT\n")
	}
	return b.String()
}

func TestTestdataParses(t *testing.T) {
	for name, b := range testdata(t, "iptables-*-save-*.txt") {
		rs, err := ParseIptablesSave("nft", string(b))
		if err != nil || len(rs.Tables) == 0 {
			t.Errorf("%s: %v, %d tables", name, err, len(rs.Tables))
		}
	}
	for name, b := range testdata(t, "nft-*.json") {
		text := testdata(t, strings.TrimSuffix(name, ".json")+".txt")
		rs, err := ParseNftJSON(b, string(text[strings.TrimSuffix(name, ".json")+".txt"]))
		if err != nil || len(rs.Chains) == 0 {
			t.Fatalf("%s: %v", name, err)
		}
		for _, c := range rs.Chains {
			for _, r := range c.Rules {
				if r.Text == "" {
					t.Errorf("%s: %s/%s/%s handle %d has no text", name, c.Family, c.Table, c.Name, r.Handle)
				}
			}
		}
	}
}

// FuzzParseIptablesSave: no crash or hang on any text; a parsed ruleset
// keeps every rule line, is consistent (rules name their chain, targets
// come from -j/-g), prints back as iptables-save text that parses to the
// same ruleset, and DropByCounters over it names only what is there.
func FuzzParseIptablesSave(f *testing.F) {
	for _, b := range testdata(f, "iptables-*-save-*.txt") {
		f.Add(string(b))
	}
	f.Add(saveBefore)
	f.Add(save("5", "1", "0"))
	f.Add("*filter\n:FORWARD DROP [1:2]\n-A FORWARD -g X\n[3:4] -A X -j REJECT\nCOMMIT\n")
	// a chain declared after its rules, a table opened twice, two spaces
	// after the counters: every rule stays, its text starts with -A
	f.Add("*filter\n[1:2] -A X -j DROP\n:X - [0:0]\n*nat\n*filter\n[1:2]  -A X -j REJECT\nCOMMIT\n")
	// ip6tables-save: IPv6 prefixes, the rpfilter match in raw, a DNAT to [addr]:port
	f.Add("*raw\n:PREROUTING ACCEPT [5:400]\n[1:80] -A PREROUTING -m rpfilter --invert -j DROP\nCOMMIT\n" +
		"*nat\n:KUBE-SEP-X - [0:0]\n[1:80] -A KUBE-SEP-X -p tcp -m tcp -j DNAT --to-destination [fd00:10:244:1::2]:80\nCOMMIT\n" +
		"*filter\n:FORWARD DROP [2:160]\n[1:80] -A FORWARD -d fd00:10:244:1::2/128 -p tcp -m tcp --dport 80 -j REJECT --reject-with tcp-reset\nCOMMIT\n")
	f.Fuzz(func(t *testing.T, out string) {
		fuzztest.Bounded(t, func() error { return checkIptablesSave(out) })
	})
}

func checkIptablesSave(out string) error {
	rs, err := ParseIptablesSave("nft", out)
	if err != nil {
		return nil
	}
	if n, lines := ruleCount(rs), ruleLines(out); n != lines {
		return fmt.Errorf("%d rule lines, %d rules parsed", lines, n)
	}
	for tn, tb := range rs.Tables {
		if tb.Name != tn {
			return fmt.Errorf("table %q under key %q", tb.Name, tn)
		}
		for cn, c := range tb.Chains {
			if c.Name != cn {
				return fmt.Errorf("chain %q under key %q", c.Name, cn)
			}
			for _, r := range c.Rules {
				if err := checkRule(cn, r); err != nil {
					return err
				}
			}
		}
	}
	text := formatSave(rs)
	again, err := ParseIptablesSave("nft", text)
	if err != nil {
		return fmt.Errorf("printed ruleset does not parse: %v\n%s", err, text)
	}
	if !reflect.DeepEqual(again, rs) {
		return fmt.Errorf("printed ruleset parses differently:\n%s", text)
	}
	for tn, tb := range rs.Tables {
		for cn := range tb.Chains {
			if d, ok := DropByCounters(rs, rs, tn, cn); ok && !d.IsPolicy() {
				return fmt.Errorf("%s/%s: counters that did not move explain a drop: %+v", tn, cn, d)
			}
			if d, ok := DropByCounters(nil, rs, tn, cn); ok {
				if err := checkDecision(rs, tn, d); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func ruleCount(rs *IptRuleset) int {
	n := 0
	for _, tb := range rs.Tables {
		for _, c := range tb.Chains {
			n += len(c.Rules)
		}
	}
	return n
}

// ruleLines counts the lines of an iptables-save text that are rules.
func ruleLines(out string) int {
	n := 0
	for _, l := range strings.Split(out, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && l != "COMMIT" && !strings.HasPrefix(l, "#") && !strings.HasPrefix(l, "*") && !strings.HasPrefix(l, ":") {
			n++
		}
	}
	return n
}

func checkRule(chain string, r *IptRule) error {
	f := strings.Fields(r.Text)
	if r.Chain != chain || len(f) < 2 || f[0] != "-A" || f[1] != chain || r.Text != strings.TrimSpace(r.Text) {
		return fmt.Errorf("rule %+v in chain %q", r, chain)
	}
	target, jump := "", ""
	for i := 2; i+1 < len(f); i++ {
		if f[i] == "-j" || f[i] == "-g" {
			target, jump = f[i+1], f[i]
		}
	}
	if r.Target != target || r.Goto != (jump == "-g") {
		return fmt.Errorf("rule %q: target %q goto %v", r.Text, r.Target, r.Goto)
	}
	return nil
}

func checkDecision(rs *IptRuleset, table string, d Decision) error {
	c := rs.Tables[table].Chains[d.Chain]
	if d.Table != table || c == nil {
		return fmt.Errorf("decision %+v names a chain that is not in table %s", d, table)
	}
	if d.IsPolicy() {
		if c.Policy != "DROP" {
			return fmt.Errorf("decision %+v, policy %s", d, c.Policy)
		}
		return nil
	}
	for _, r := range c.Rules {
		if r.Text == d.Rule && r.Target == d.Verdict && r.Packets > 0 {
			return nil
		}
	}
	return fmt.Errorf("decision %+v names no counted %s rule of %s", d, d.Verdict, d.Chain)
}

// fuzzPackets are what DropAt is asked about in FuzzParseNftJSON.
var fuzzPackets = []Packet{
	pkt("10.244.1.2", 80, "flannel.1"),
	pkt("10.244.1.2", 80, "eth9"),
	{Tuple: journey.Tuple{Proto: journey.ProtoUDP, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.96.0.10"), Sport: 5353, Dport: 53}, Iif: "cni0", Oif: "flannel.1"},
	{Tuple: journey.Tuple{Proto: journey.ProtoICMP, Src: netip.MustParseAddr("192.0.2.10"), Dst: netip.MustParseAddr("198.51.100.20")}, Iif: "eth0"},
	// a new connection to a ClusterIP (kube-proxy's ct state / vmap rules)
	{Tuple: journey.Tuple{Proto: journey.ProtoTCP, Src: netip.MustParseAddr("10.244.0.5"), Dst: netip.MustParseAddr("10.96.0.100"), Sport: 40000, Dport: 80}, Iif: "cni0", Oif: "eth0", CT: "new"},
}

// FuzzParseNftJSON: no crash or hang on any JSON and text; a parsed
// ruleset files every chain under its own key, and DropAt, for every hook,
// names only chains and rules that are there.
func FuzzParseNftJSON(f *testing.F) {
	for name, js := range testdata(f, "nft-*.json") {
		txt := strings.TrimSuffix(name, ".json") + ".txt"
		f.Add(js, string(testdata(f, txt)[txt]))
	}
	f.Add([]byte(nftJSON), nftText)
	f.Add([]byte(kubeProxyNoEndpointsJSON), "")
	f.Add([]byte(`{"nftables":[{"chain":{"family":"ip","table":"t","name":"c","hook":"input","prio":"x"}},{"rule":{"family":"ip","table":"t","chain":"c","expr":[{"goto":{"target":"c"}}]}}]}`), "")
	f.Fuzz(func(t *testing.T, js []byte, text string) {
		fuzztest.Bounded(t, func() error { return checkNft(js, text) })
	})
}

func checkNft(js []byte, text string) error {
	rs, err := ParseNftJSON(js, text)
	if err != nil {
		return nil
	}
	for k, c := range rs.Chains {
		if k != chainKey(c.Family, c.Table, c.Name) {
			return fmt.Errorf("chain %s/%s/%s under key %q", c.Family, c.Table, c.Name, k)
		}
	}
	for _, hook := range nftHooks {
		for _, p := range fuzzPackets {
			d, ok := rs.DropAt(hook, -1000, 1000, p, nil)
			if !ok {
				continue
			}
			c := rs.Chains[chainKey(d.Family, d.Table, d.Chain)]
			if c == nil || d.Source != "nft" {
				return fmt.Errorf("decision %+v names no chain", d)
			}
			if d.IsPolicy() {
				if c.Policy != "drop" {
					return fmt.Errorf("decision %+v, policy %q", d, c.Policy)
				}
				continue
			}
			if !slices.ContainsFunc(c.Rules, func(r NftRule) bool { return r.Handle == d.Handle }) {
				return fmt.Errorf("decision %+v names no rule of %s", d, d.Chain)
			}
		}
	}
	return nil
}

// fanOut is a ruleset where chain C0 jumps four times to C1, C1 four
// times to C2, and so on: legal (no loop), and 4^depth paths to walk for
// an evaluator that does not remember what a chain gave.
func fanOut(depth int, ipt bool) string {
	var b strings.Builder
	if ipt {
		b.WriteString("*filter\n:FORWARD DROP [1:0]\n[1:0] -A FORWARD -j C0\n")
		for i := 0; i < depth; i++ {
			for range 4 {
				fmt.Fprintf(&b, "[1:0] -A C%d -j C%d\n", i, i+1)
			}
		}
		b.WriteString("COMMIT\n")
		return b.String()
	}
	b.WriteString(`{"nftables":[{"chain":{"family":"ip","table":"t","name":"fwd","hook":"forward","prio":0,"policy":"accept"}},`)
	b.WriteString(`{"rule":{"family":"ip","table":"t","chain":"fwd","handle":1,"expr":[{"jump":{"target":"C0"}}]}}`)
	for i := 0; i <= depth; i++ {
		fmt.Fprintf(&b, `,{"chain":{"family":"ip","table":"t","name":"C%d"}}`, i)
	}
	for i := 0; i < depth; i++ {
		for range 4 {
			fmt.Fprintf(&b, `,{"rule":{"family":"ip","table":"t","chain":"C%d","handle":2,"expr":[{"jump":{"target":"C%d"}}]}}`, i, i+1)
		}
	}
	b.WriteString("]}")
	return b.String()
}

// TestFanOutEnds: rule evaluation visits each chain once, not once per path.
func TestFanOutEnds(t *testing.T) {
	fuzztest.Bounded(t, func() error {
		rs, err := ParseIptablesSave("nft", fanOut(16, true))
		if err != nil {
			return err
		}
		if d, ok := DropByCounters(nil, rs, "filter", "FORWARD"); !ok || !d.IsPolicy() {
			return fmt.Errorf("decision %+v ok=%v, want the policy", d, ok)
		}
		return nil
	})
	fuzztest.Bounded(t, func() error {
		rs, err := ParseNftJSON([]byte(fanOut(16, false)), "")
		if err != nil {
			return err
		}
		if d, ok := rs.DropAt("forward", -1, 1, fuzzPackets[0], nil); ok {
			return fmt.Errorf("decision %+v, want none", d)
		}
		return nil
	})
}
