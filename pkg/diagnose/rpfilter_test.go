package diagnose

import (
	"testing"

	"github.com/skbtrail/skbtrail/pkg/nfrules"
)

func TestIsRPFilterRule(t *testing.T) {
	for rule, want := range map[string]bool{
		"-A PREROUTING -m rpfilter --invert -j DROP":            true,
		"fib saddr . iif oif missing drop":                      true,
		"-A FORWARD -d fd00:10:244:1::2/128 -p tcp -j DROP":     false,
		"ip6 daddr fd00:10:244:1::2 tcp dport 80 drop":          false,
		"fib daddr type local drop":                             false,
		"-A PREROUTING -m rpfilter --invert -j REJECT --reject": false,
	} {
		dec := nfrules.Decision{Rule: rule, Verdict: "DROP"}
		if rule == "-A PREROUTING -m rpfilter --invert -j REJECT --reject" {
			dec.Verdict = "REJECT"
		}
		if got := isRPFilterRule(dec); got != want {
			t.Errorf("%q: %v, want %v", rule, got, want)
		}
	}
}
