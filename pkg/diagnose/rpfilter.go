package diagnose

import (
	"strings"

	"github.com/skbtrail/skbtrail/pkg/nfrules"
)

// isRPFilterRule reports whether a dropping rule is a reverse-path filter:
// IPv6 has no rp_filter sysctl, so firewalld and hand-written rulesets do
// it in netfilter (ip6tables -m rpfilter, nft fib saddr . iif).
func isRPFilterRule(dec nfrules.Decision) bool {
	if dec.IsPolicy() || dec.IsReject() {
		return false
	}
	r := dec.Rule
	return strings.Contains(r, "-m rpfilter") || (strings.Contains(r, "fib saddr") && strings.Contains(r, "iif"))
}

// rpFilterRuleAdvice: fix the return route (asymmetric routing), or exempt
// the interface from the check.
func rpFilterRuleAdvice(dec nfrules.Decision) string {
	return "make the route back to the source leave through the device the packet arrives on (ip -6 route get <source> should name it), or exempt that device from the rule " +
		"(e.g. iptables: -m rpfilter --invert -i <device> ! ..., firewalld: IPv6_rpfilter=no or loose)" + deleteHint(dec)
}

// iptablesCommand is the command that edits the rules of an iptables
// decision: iptables, iptables-legacy, or their ip6tables forms for IPv6.
func iptablesCommand(dec nfrules.Decision) string {
	ipt := dec.Source
	if ipt == "iptables-nft" {
		ipt = "iptables"
	}
	if dec.Family == "ip6" {
		ipt = strings.Replace(ipt, "iptables", "ip6tables", 1)
	}
	return ipt
}
