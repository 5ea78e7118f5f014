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
	Sets   map[string]*NftSet   // named sets and maps, key family/table/name
}

// NftSet is a named set, or a map (verdict map when its elements carry
// verdicts), with its elements.
type NftSet struct {
	Family, Table, Name string
	Elems               []NftElem
}

// NftElem is one element: its key (a value, prefix, range or concatenation
// as nft's JSON writes it), its comment, and for a map the data (e.g. a
// verdict: {"goto": {"target": "reject-chain"}}).
type NftElem struct {
	Key     json.RawMessage
	Comment string
	Data    map[string]json.RawMessage
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
	rs := &NftRuleset{Chains: map[string]*NftChain{}, Sets: map[string]*NftSet{}}
	for _, obj := range doc.Nftables {
		for _, kind := range []string{"set", "map"} {
			if raw, ok := obj[kind]; ok {
				set, err := parseNftSet(raw)
				if err != nil {
					return nil, fmt.Errorf("parse nft %s: %w", kind, err)
				}
				rs.Sets[chainKey(set.Family, set.Table, set.Name)] = set
			}
		}
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

// parseNftSet parses a set or map object of nft's JSON. An element is the
// key alone (sets) or a [key, data] pair (maps); a key with a comment is
// wrapped as {"elem": {"val": key, "comment": "..."}}.
func parseNftSet(raw json.RawMessage) (*NftSet, error) {
	var s struct {
		Family, Table, Name string
		Elem                []json.RawMessage
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	set := &NftSet{Family: s.Family, Table: s.Table, Name: s.Name}
	for _, e := range s.Elem {
		var el NftElem
		var pair []json.RawMessage
		if json.Unmarshal(e, &pair) == nil && len(pair) == 2 {
			e = pair[0]
			if err := json.Unmarshal(pair[1], &el.Data); err != nil {
				el.Data = map[string]json.RawMessage{"value": pair[1]}
			}
		}
		var wrapped struct {
			Elem *struct {
				Val     json.RawMessage
				Comment string
			}
		}
		if json.Unmarshal(e, &wrapped) == nil && wrapped.Elem != nil {
			e, el.Comment = wrapped.Elem.Val, wrapped.Elem.Comment
		}
		el.Key = e
		set.Elems = append(set.Elems, el)
	}
	return set, nil
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
	// CT is its conntrack state as nft names it ("new", "established",
	// ...); "" when not known.
	CT string
}

type tri int

const (
	no tri = iota
	yes
	unknown
)

// DropAt evaluates the base chains of hook (nft name, e.g. "forward") with
// priority in (lo, hi) in families ip (ip6 for an IPv6 packet) and inet,
// skipping tables in skip (family/table), and returns the rule or policy
// that drops pkt.
func (rs *NftRuleset) DropAt(hook string, lo, hi int, pkt Packet, skip map[string]bool) (Decision, bool) {
	var base []*NftChain
	family := "ip"
	if pkt.Tuple.Dst.Is6() {
		family = "ip6"
	}
	for _, c := range rs.Chains {
		if c.Hook == hook && c.Prio > lo && c.Prio < hi && (c.Family == family || c.Family == "inet") && !skip[c.Family+"/"+c.Table] {
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
		if evalMatches(rs, c, r.Expr, pkt) != yes {
			continue
		}
		for _, e := range r.Expr {
			switch {
			case has(e, "vmap"):
				if d, v, ok := ev.vmap(c, r, e["vmap"], depth); ok {
					return d, v
				}
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

// vmap evaluates a verdict map lookup ("ip daddr . meta l4proto . th dport
// vmap @no-endpoint-services"): the element the packet's key finds and the
// verdict it leads to, with the map and the element's comment in the
// decision. ok is false when no element matched or the key is not
// understood (the rule then continues, as nft does on a miss).
func (ev *nftEval) vmap(c *NftChain, r NftRule, raw json.RawMessage, depth int) (Decision, string, bool) {
	var m struct {
		Key  json.RawMessage
		Data json.RawMessage
	}
	if json.Unmarshal(raw, &m) != nil {
		return Decision{}, "", false
	}
	var name string
	if json.Unmarshal(m.Data, &name) != nil || !strings.HasPrefix(name, "@") {
		return Decision{}, "", false // anonymous map (numgen ... vmap { 0 : ... }): not followed
	}
	set := ev.rs.Sets[chainKey(c.Family, c.Table, name[1:])]
	vals, ok := keyValues(m.Key, ev.pkt)
	if set == nil || !ok {
		return Decision{}, "", false
	}
	for _, el := range set.Elems {
		if elemMatches(el.Key, vals) != yes {
			continue
		}
		mark := func(d Decision) Decision {
			d.Map, d.Comment = set.Name, el.Comment
			return d
		}
		switch {
		case has(el.Data, "drop"):
			text := r.Text
			if text == "" {
				text = "vmap @" + set.Name
			}
			return mark(Decision{Family: c.Family, Source: "nft", Table: c.Table, Chain: c.Name, Rule: text, Verdict: "DROP", Handle: r.Handle}), "drop", true
		case has(el.Data, "accept"):
			return Decision{}, "accept", true
		case has(el.Data, "jump"), has(el.Data, "goto"):
			var t struct{ Target string }
			raw := el.Data["jump"]
			if raw == nil {
				raw = el.Data["goto"]
			}
			_ = json.Unmarshal(raw, &t)
			sub := ev.rs.Chains[chainKey(c.Family, c.Table, t.Target)]
			if sub == nil {
				return Decision{}, "", false
			}
			d, v := ev.chain(sub, depth+1)
			if v == "drop" || v == "reject" || v == "accept" {
				return mark(d), v, true
			}
			if has(el.Data, "goto") {
				return Decision{}, "", true
			}
		}
		return Decision{}, "", false
	}
	return Decision{}, "", false
}

// keyValues is the packet's value of a map key: one value, or one per
// part of a concatenation.
func keyValues(raw json.RawMessage, pkt Packet) ([]string, bool) {
	var cc struct{ Concat []json.RawMessage }
	if json.Unmarshal(raw, &cc) == nil && cc.Concat != nil {
		var vals []string
		for _, part := range cc.Concat {
			v, ok := leftValue(part, pkt)
			if !ok {
				return nil, false
			}
			vals = append(vals, v)
		}
		return vals, true
	}
	v, ok := leftValue(raw, pkt)
	return []string{v}, ok
}

// elemMatches matches a set element's key against the packet's values.
func elemMatches(key json.RawMessage, vals []string) tri {
	var cc struct{ Concat []json.RawMessage }
	if json.Unmarshal(key, &cc) == nil && cc.Concat != nil {
		if len(cc.Concat) != len(vals) {
			return unknown
		}
		res := yes
		for i, part := range cc.Concat {
			switch rightMatches(part, vals[i]) {
			case no:
				return no
			case unknown:
				res = unknown
			}
		}
		return res
	}
	if len(vals) != 1 {
		return unknown
	}
	return rightMatches(key, vals[0])
}

// setMatches looks the value up in the named set of the chain's table.
func setMatches(rs *NftRuleset, c *NftChain, name, v string) tri {
	set := rs.Sets[chainKey(c.Family, c.Table, name)]
	if set == nil {
		return unknown
	}
	res := no
	for _, el := range set.Elems {
		switch elemMatches(el.Key, []string{v}) {
		case yes:
			return yes
		case unknown:
			res = unknown
		}
	}
	return res
}

// evalMatches evaluates a rule's match expressions against the packet:
// yes only when every match is understood and true.
func evalMatches(rs *NftRuleset, c *NftChain, exprs []map[string]json.RawMessage, pkt Packet) tri {
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
		var r tri
		var setName string
		if json.Unmarshal(m.Right, &setName) == nil && strings.HasPrefix(setName, "@") {
			r = setMatches(rs, c, setName[1:], v)
		} else {
			r = rightMatches(m.Right, v)
		}
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
		CT      *struct{ Key string } `json:"ct"`
	}
	if json.Unmarshal(raw, &l) != nil {
		return "", false
	}
	t := pkt.Tuple
	if p := l.Payload; p != nil {
		switch p.Protocol + " " + p.Field {
		case "ip saddr", "ip daddr", "ip protocol":
			if t.Dst.Is6() {
				return "\x00none", true // an IPv6 packet has no IPv4 header to match
			}
			if p.Field == "saddr" {
				return t.Src.String(), true
			}
			if p.Field == "daddr" {
				return t.Dst.String(), true
			}
			return journey.ProtoName(t.Proto), true
		case "ip6 saddr", "ip6 daddr", "ip6 nexthdr":
			if !t.Dst.Is6() {
				return "\x00none", true
			}
			if p.Field == "saddr" {
				return t.Src.String(), true
			}
			if p.Field == "daddr" {
				return t.Dst.String(), true
			}
			return journey.ProtoName(t.Proto), true
		case "th sport", "th dport":
			if t.Proto != journey.ProtoTCP && t.Proto != journey.ProtoUDP {
				return "", false
			}
			if p.Field == "sport" {
				return strconv.Itoa(int(t.Sport)), true
			}
			return strconv.Itoa(int(t.Dport)), true
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
	if l.CT != nil && l.CT.Key == "state" && pkt.CT != "" {
		return pkt.CT, true
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
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		res := no
		for _, it := range list {
			switch rightMatches(it, v) {
			case yes:
				return yes
			case unknown:
				res = unknown
			}
		}
		return res
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
