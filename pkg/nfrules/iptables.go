// Package nfrules reads a namespace's netfilter rules (iptables-save for
// legacy and nf_tables iptables, nft's JSON for native tables) and finds the
// rule or chain policy that decided a packet's fate at one hook.
package nfrules

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// IptRule is one iptables rule with its counters.
type IptRule struct {
	Chain   string
	Text    string // as iptables-save prints it, without counters: "-A FORWARD ... -j DROP"
	Target  string // the -j / -g target
	Packets uint64
	Goto    bool
}

// IptChain is a chain with its policy (built-in chains) and rules.
type IptChain struct {
	Name    string
	Policy  string // "ACCEPT", "DROP" or "-" for user chains
	Packets uint64 // policy counter
	Rules   []*IptRule
}

// IptTable is one table of an iptables-save dump.
type IptTable struct {
	Name   string
	Chains map[string]*IptChain
}

// IptRuleset is the parsed output of `iptables-save -c`.
type IptRuleset struct {
	Variant string // "legacy" or "nft"
	Tables  map[string]*IptTable
}

func parseCounters(s string) (uint64, error) {
	s = strings.TrimPrefix(strings.TrimSuffix(s, "]"), "[")
	pk, _, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("bad counters %q", s)
	}
	return strconv.ParseUint(pk, 10, 64)
}

// ParseIptablesSave parses `iptables-save -c` output.
func ParseIptablesSave(variant, out string) (*IptRuleset, error) {
	rs := &IptRuleset{Variant: variant, Tables: map[string]*IptTable{}}
	var cur *IptTable
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<16), 1<<22)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || line == "COMMIT":
		case strings.HasPrefix(line, "*"):
			if cur = rs.Tables[line[1:]]; cur == nil {
				cur = &IptTable{Name: line[1:], Chains: map[string]*IptChain{}}
				rs.Tables[cur.Name] = cur
			}
		case strings.HasPrefix(line, ":"):
			if cur == nil {
				return nil, fmt.Errorf("line %d: chain outside a table", n)
			}
			f := strings.Fields(line[1:])
			if len(f) < 2 {
				return nil, fmt.Errorf("line %d: bad chain %q", n, line)
			}
			// a chain declared again (or after its rules) keeps its rules
			c := cur.Chains[f[0]]
			if c == nil {
				c = &IptChain{Name: f[0]}
				cur.Chains[c.Name] = c
			}
			c.Policy, c.Packets = f[1], 0
			if len(f) > 2 {
				c.Packets, _ = parseCounters(f[2])
			}
		default:
			if cur == nil {
				return nil, fmt.Errorf("line %d: rule outside a table", n)
			}
			var pk uint64
			if strings.HasPrefix(line, "[") {
				cnt, rest, _ := strings.Cut(line, " ")
				var err error
				if pk, err = parseCounters(cnt); err != nil {
					return nil, fmt.Errorf("line %d: %w", n, err)
				}
				line = strings.TrimSpace(rest)
			}
			f := strings.Fields(line)
			if len(f) < 2 || f[0] != "-A" {
				return nil, fmt.Errorf("line %d: bad rule %q", n, line)
			}
			r := &IptRule{Chain: f[1], Text: line, Packets: pk}
			for i := 2; i+1 < len(f); i++ {
				if f[i] == "-j" || f[i] == "-g" {
					r.Target, r.Goto = f[i+1], f[i] == "-g"
				}
			}
			c := cur.Chains[r.Chain]
			if c == nil {
				c = &IptChain{Name: r.Chain, Policy: "-"}
				cur.Chains[r.Chain] = c
			}
			c.Rules = append(c.Rules, r)
		}
	}
	return rs, sc.Err()
}

// Decision is what decided a packet at a hook.
type Decision struct {
	Family  string // "ip" for iptables, "ip6" for ip6tables; the nft family for native tables
	Source  string // "iptables-legacy", "iptables-nft", "nft"
	Table   string
	Chain   string
	Rule    string // rule text, or "policy DROP"
	Verdict string // "DROP", "REJECT", "policy DROP"
	Exact   bool   // counters proved it (false: matched by reading the rule)
	Handle  int    // nft rule handle
	// Map is the nft verdict map whose element led to the verdict
	// (e.g. kube-proxy's "no-endpoint-services"), Comment that element's
	// comment; both empty otherwise.
	Map, Comment string
}

// IsReject reports whether the decision answered the packet.
func (d Decision) IsReject() bool { return d.Verdict == "REJECT" }

// IsPolicy reports whether the chain's policy decided.
func (d Decision) IsPolicy() bool { return d.Verdict == "policy DROP" }

// CTInvalid reports whether the rule dropped conntrack-INVALID packets.
func (d Decision) CTInvalid() bool {
	return strings.Contains(d.Rule, "INVALID") && (strings.Contains(d.Rule, "--ctstate") || strings.Contains(d.Rule, "--state") || strings.Contains(d.Rule, "ct state"))
}

// DropByCounters finds, in table/chain of after, the DROP/REJECT rule whose
// packet counter rose since before (following jumps), else the chain policy
// if it is DROP and nothing else rose. ok is false when neither explains it.
func DropByCounters(before, after *IptRuleset, table, chain string) (Decision, bool) {
	ta := after.Tables[table]
	if ta == nil {
		return Decision{}, false
	}
	var tb *IptTable
	if before != nil {
		tb = before.Tables[table]
	}
	delta := func(r *IptRule, idx int) uint64 {
		var was uint64
		if tb != nil {
			if c := tb.Chains[r.Chain]; c != nil && idx < len(c.Rules) && c.Rules[idx].Text == r.Text {
				was = c.Rules[idx].Packets
			}
		}
		if r.Packets < was {
			return 0
		}
		return r.Packets - was
	}
	src := "iptables-" + after.Variant
	// Each chain is walked once: what it gives does not depend on the way
	// in, and a ruleset whose chains jump several times to the next ones
	// has exponentially many ways.
	type outcome struct {
		d  Decision
		ok bool
	}
	walked := map[string]outcome{}
	var walk func(name string, depth int) (Decision, bool)
	walk = func(name string, depth int) (d Decision, ok bool) {
		if o, seen := walked[name]; seen {
			return o.d, o.ok
		}
		c := ta.Chains[name]
		if c == nil || depth > 16 {
			return Decision{}, false
		}
		walked[name] = outcome{} // a loop back into name finds nothing
		defer func() { walked[name] = outcome{d, ok} }()
		for i, r := range c.Rules {
			if delta(r, i) == 0 {
				continue
			}
			switch r.Target {
			case "DROP", "REJECT":
				return Decision{Family: "ip", Source: src, Table: table, Chain: name, Rule: r.Text, Verdict: r.Target, Exact: true}, true
			case "ACCEPT", "RETURN", "":
			default:
				if d, ok := walk(r.Target, depth+1); ok {
					return d, true
				}
			}
		}
		return Decision{}, false
	}
	if d, ok := walk(chain, 0); ok {
		return d, true
	}
	if c := ta.Chains[chain]; c != nil && c.Policy == "DROP" {
		return Decision{Family: "ip", Source: src, Table: table, Chain: chain, Rule: "policy DROP", Verdict: "policy DROP", Exact: false}, true
	}
	return Decision{}, false
}
