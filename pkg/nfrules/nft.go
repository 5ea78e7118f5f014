package nfrules

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// NftChain is an nftables chain with its rules (JSON form).
type NftChain struct {
	Family, Table, Name string
	Hook                string // "" for regular chains
	Prio                int
	Policy              string
	Rules               []NftRule
}

// NftRule is one rule: its handle, expressions and text.
type NftRule struct {
	Handle int
	Expr   []map[string]json.RawMessage
	Text   string
}

// NftRuleset is a parsed `nft -j list ruleset`.
type NftRuleset struct {
	Chains map[string]*NftChain // key family/table/chain
}

func chainKey(family, table, chain string) string { return family + "/" + table + "/" + chain }

// ParseNftJSON parses `nft -j list ruleset`; text is `nft -a list ruleset`
// (for rule texts as nft prints them; may be empty).
func ParseNftJSON(js []byte, text string) (*NftRuleset, error) {
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal(js, &doc); err != nil {
		return nil, fmt.Errorf("parse nft JSON: %w", err)
	}
	rs := &NftRuleset{Chains: map[string]*NftChain{}}
	for _, obj := range doc.Nftables {
		if raw, ok := obj["chain"]; ok {
			var c struct {
				Family, Table, Name, Hook, Policy string
				Prio                              json.RawMessage
			}
			if err := json.Unmarshal(raw, &c); err != nil {
				return nil, fmt.Errorf("parse nft chain: %w", err)
			}
			prio, _ := strconv.Atoi(string(c.Prio))
			rs.Chains[chainKey(c.Family, c.Table, c.Name)] = &NftChain{Family: c.Family, Table: c.Table, Name: c.Name, Hook: c.Hook, Prio: prio, Policy: c.Policy}
		}
	}
	texts := ruleTexts(text)
	for _, obj := range doc.Nftables {
		raw, ok := obj["rule"]
		if !ok {
			continue
		}
		var r struct {
			Family, Table, Chain string
			Handle               int
			Expr                 []map[string]json.RawMessage
		}
		if err := json.Unmarshal(raw, &r); err != nil {
			return nil, fmt.Errorf("parse nft rule: %w", err)
		}
		k := chainKey(r.Family, r.Table, r.Chain)
		c := rs.Chains[k]
		if c == nil {
			continue
		}
		c.Rules = append(c.Rules, NftRule{Handle: r.Handle, Expr: r.Expr, Text: texts[fmt.Sprintf("%s#%d", k, r.Handle)]})
	}
	return rs, nil
}

// ruleTexts maps family/table/chain#handle to the rule as `nft -a` prints it.
func ruleTexts(text string) map[string]string {
	out := map[string]string{}
	var family, table, chain string
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[0] == "table":
			family, table = f[1], f[2]
		case len(f) >= 2 && f[0] == "chain":
			chain = f[1]
		case strings.Contains(line, "# handle ") && chain != "" && !strings.HasPrefix(line, "type "):
			body, h, _ := strings.Cut(line, " # handle ")
			out[fmt.Sprintf("%s#%s", chainKey(family, table, chain), strings.TrimSpace(h))] = strings.TrimSpace(body)
		}
	}
	return out
}

// Packet is the packet as a hook sees it.
type Packet struct {
	Tuple    journey.Tuple
	Iif, Oif string
}

type tri int

const (
	no tri = iota
	yes
	unknown
)

// DropAt evaluates the base chains of hook (nft name, e.g. "forward") with
// priority in (lo, hi) in families ip and inet, skipping tables in skip
// (family/table), and returns the rule or policy that drops pkt.
func (rs *NftRuleset) DropAt(hook string, lo, hi int, pkt Packet, skip map[string]bool) (Decision, bool) {
	var base []*NftChain
	for _, c := range rs.Chains {
		if c.Hook == hook && c.Prio > lo && c.Prio < hi && (c.Family == "ip" || c.Family == "inet") && !skip[c.Family+"/"+c.Table] {
			base = append(base, c)
		}
	}
	sort.Slice(base, func(i, k int) bool { return base[i].Prio < base[k].Prio })
	ev := &nftEval{rs: rs, pkt: pkt, done: map[*NftChain]nftOutcome{}}
	for _, c := range base {
		d, verdict := ev.chain(c, 0)
		if verdict == "drop" || verdict == "reject" {
			return d, true
		}
		if verdict == "" && c.Policy == "drop" {
			return Decision{Family: c.Family, Source: "nft", Table: c.Table, Chain: c.Name, Rule: "policy DROP", Verdict: "policy DROP"}, true
		}
	}
	return Decision{}, false
}

// nftEval evaluates chains for one packet. Each chain is evaluated once:
// what it gives does not depend on the way in, and a ruleset whose chains
// jump several times to the next ones has exponentially many ways.
type nftEval struct {
	rs   *NftRuleset
	pkt  Packet
	done map[*NftChain]nftOutcome
}

type nftOutcome struct {
	d       Decision
	verdict string
}

// chain returns the decision and verdict ("accept", "drop", "reject",
// "return" or "" for falling off the end).
func (ev *nftEval) chain(c *NftChain, depth int) (Decision, string) {
	if o, ok := ev.done[c]; ok {
		return o.d, o.verdict
	}
	if depth > 16 {
		return Decision{}, ""
	}
	ev.done[c] = nftOutcome{} // a loop back into c falls through
	d, v := ev.rules(c, depth)
	ev.done[c] = nftOutcome{d, v}
	return d, v
}

func (ev *nftEval) rules(c *NftChain, depth int) (Decision, string) {
	rs, pkt := ev.rs, ev.pkt
	for _, r := range c.Rules {
		if evalMatches(r.Expr, pkt) != yes {
			continue
		}
		for _, e := range r.Expr {
			switch {
			case has(e, "drop"), has(e, "reject"):
				v := "DROP"
				if has(e, "reject") {
					v = "REJECT"
				}
				text := r.Text
				if text == "" {
					text = fmt.Sprintf("handle %d", r.Handle)
				}
				return Decision{Family: c.Family, Source: "nft", Table: c.Table, Chain: c.Name, Rule: text, Verdict: v, Handle: r.Handle}, strings.ToLower(v)
			case has(e, "accept"):
				return Decision{}, "accept"
			case has(e, "return"):
				return Decision{}, "return"
			case has(e, "jump"), has(e, "goto"):
				var t struct{ Target string }
				raw := e["jump"]
				if raw == nil {
					raw = e["goto"]
				}
				_ = json.Unmarshal(raw, &t)
				if sub := rs.Chains[chainKey(c.Family, c.Table, t.Target)]; sub != nil {
					d, v := ev.chain(sub, depth+1)
					if v == "drop" || v == "reject" || v == "accept" {
						return d, v
					}
					if has(e, "goto") {
						return Decision{}, ""
					}
				}
			}
		}
	}
	return Decision{}, ""
}

func has(e map[string]json.RawMessage, k string) bool { _, ok := e[k]; return ok }

// evalMatches evaluates a rule's match expressions against the packet:
// yes only when every match is understood and true.
func evalMatches(exprs []map[string]json.RawMessage, pkt Packet) tri {
	res := yes
	for _, e := range exprs {
		raw, ok := e["match"]
		if !ok {
			continue
		}
		var m struct {
			Op    string          `json:"op"`
			Left  json.RawMessage `json:"left"`
			Right json.RawMessage `json:"right"`
		}
		if json.Unmarshal(raw, &m) != nil {
			return unknown
		}
		v, ok := leftValue(m.Left, pkt)
		if !ok {
			res = unknown
			continue
		}
		r := rightMatches(m.Right, v)
		if r == unknown {
			res = unknown
			continue
		}
		if m.Op == "!=" {
			if r == yes {
				r = no
			} else {
				r = yes
			}
		} else if m.Op != "==" && m.Op != "in" {
			res = unknown
			continue
		}
		if r == no {
			return no
		}
	}
	return res
}

// leftValue returns the packet's value for a payload/meta expression.
func leftValue(raw json.RawMessage, pkt Packet) (string, bool) {
	var l struct {
		Payload *struct{ Protocol, Field string }
		Meta    *struct{ Key string }
	}
	if json.Unmarshal(raw, &l) != nil {
		return "", false
	}
	t := pkt.Tuple
	if p := l.Payload; p != nil {
		switch p.Protocol + " " + p.Field {
		case "ip saddr":
			return t.Src.String(), true
		case "ip daddr":
			return t.Dst.String(), true
		case "ip protocol":
			return journey.ProtoName(t.Proto), true
		case "tcp sport", "udp sport", "tcp dport", "udp dport":
			if journey.ProtoName(t.Proto) != p.Protocol {
				return "\x00none", true
			}
			if p.Field == "sport" {
				return strconv.Itoa(int(t.Sport)), true
			}
			return strconv.Itoa(int(t.Dport)), true
		}
		return "", false
	}
	if m := l.Meta; m != nil {
		switch m.Key {
		case "iifname":
			return pkt.Iif, true
		case "oifname":
			return pkt.Oif, true
		case "l4proto":
			return journey.ProtoName(t.Proto), true
		}
	}
	return "", false
}

func rightMatches(raw json.RawMessage, v string) tri {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		if strings.HasSuffix(s, "*") {
			if strings.HasPrefix(v, strings.TrimSuffix(s, "*")) {
				return yes
			}
			return no
		}
		return boolTri(s == v)
	}
	var n json.Number
	if json.Unmarshal(raw, &n) == nil {
		return boolTri(n.String() == v)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(raw, &obj) != nil {
		return unknown
	}
	if p, ok := obj["prefix"]; ok {
		var pf struct {
			Addr string
			Len  int
		}
		if json.Unmarshal(p, &pf) != nil {
			return unknown
		}
		pre, err1 := netip.ParsePrefix(fmt.Sprintf("%s/%d", pf.Addr, pf.Len))
		a, err2 := netip.ParseAddr(v)
		if err1 != nil || err2 != nil {
			return unknown
		}
		return boolTri(pre.Contains(a))
	}
	if set, ok := obj["set"]; ok {
		var items []json.RawMessage
		if json.Unmarshal(set, &items) != nil {
			return unknown
		}
		res := no
		for _, it := range items {
			switch rightMatches(it, v) {
			case yes:
				return yes
			case unknown:
				res = unknown
			}
		}
		return res
	}
	return unknown
}

func boolTri(b bool) tri {
	if b {
		return yes
	}
	return no
}
