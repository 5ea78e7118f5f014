package nfrules

import (
	"fmt"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// TracedDrop is what nf_tables' trace said decided a packet's drop.
type TracedDrop struct {
	Family    string // nft family name: ip, ip6, inet, ...
	Table     string
	Chain     string
	BaseChain string // the base chain whose walk reached Chain ("": Chain)
	Handle    uint64 // rule handle (0 for a policy)
	Policy    bool   // the chain's policy dropped it
}

// iptablesTables are the tables iptables-nft makes (family ip/ip6).
var iptablesTables = map[string]bool{"filter": true, "nat": true, "mangle": true, "raw": true, "security": true}

// nftHookOf maps nft hook names to journey hooks.
var nftHookOf = map[string]uint8{
	"prerouting": journey.HookPreRouting, "input": journey.HookLocalIn, "forward": journey.HookForward,
	"output": journey.HookLocalOut, "postrouting": journey.HookPostRouting,
}

// FromTrace turns a traced drop into a Decision, with the rule text as
// `nft list` prints it (native tables) or as iptables-save prints it
// (iptables-nft's tables: the rule at the same position of the chain), read
// from after (the namespace's rules once the packet was dropped). hook is
// the hook of the base chain (ok false when after does not know it); the
// decision is exact whatever after says.
func FromTrace(t TracedDrop, after *Snapshot) (d Decision, hook uint8, hookOK bool) {
	d = Decision{Family: t.Family, Source: "nft", Table: t.Table, Chain: t.Chain, Handle: int(t.Handle), Exact: true}
	if t.Policy {
		d.Rule, d.Verdict = "policy DROP", "policy DROP"
	} else {
		d.Rule = fmt.Sprintf("handle %d", t.Handle) // until a text is found
		d.Verdict = "DROP"
	}
	base := t.BaseChain
	if base == "" {
		base = t.Chain
	}
	var nftChain *NftChain
	if after != nil && after.Nft != nil {
		if c := after.Nft.Chains[chainKey(t.Family, t.Table, base)]; c != nil && c.Hook != "" {
			hook, hookOK = nftHookOf[c.Hook]
		}
		nftChain = after.Nft.Chains[chainKey(t.Family, t.Table, t.Chain)]
	}
	ipt := iptTable(t, after)
	if ipt != nil {
		d.Family, d.Source = t.Family, "iptables-nft" // ip: iptables, ip6: ip6tables
		if !hookOK {
			hook, hookOK = iptHook(base)
		}
	}
	if t.Policy {
		return d, hook, hookOK
	}
	if nftChain != nil {
		for i, r := range nftChain.Rules {
			if r.Handle != int(t.Handle) {
				continue
			}
			if r.Text != "" {
				d.Rule = r.Text
			}
			if ipt != nil {
				if c := ipt.Chains[t.Chain]; c != nil && i < len(c.Rules) {
					d.Rule = c.Rules[i].Text
				}
			}
			break
		}
	}
	if ruleRejects(d.Rule) {
		d.Verdict = "REJECT"
	}
	return d, hook, hookOK
}

// iptTable is the iptables-nft (family ip) or ip6tables-nft (family ip6)
// table the traced drop happened in, nil for a native nftables table.
func iptTable(t TracedDrop, after *Snapshot) *IptTable {
	if !iptablesTables[t.Table] || after == nil {
		return nil
	}
	rs := after.NFT
	switch t.Family {
	case "ip":
	case "ip6":
		rs = after.NFT6
	default:
		return nil
	}
	if rs == nil {
		return nil
	}
	return rs.Tables[t.Table]
}

// iptHook is the hook of an iptables built-in chain.
func iptHook(chain string) (uint8, bool) {
	for _, h := range []uint8{journey.HookPreRouting, journey.HookLocalIn, journey.HookForward, journey.HookLocalOut, journey.HookPostRouting} {
		if journey.HookName(h) == chain {
			return h, true
		}
	}
	return 0, false
}

// ruleRejects says whether a rule's text answers the packet (REJECT).
func ruleRejects(text string) bool {
	return strings.Contains(text, "-j REJECT") || strings.HasPrefix(text, "reject") || strings.Contains(text, " reject")
}
