package diagnose

import (
	"net/netip"
	"testing"
)

func TestRuleMatchesSource(t *testing.T) {
	src := netip.MustParseAddr("192.0.2.11")
	for rule, want := range map[string]bool{
		"-A FORWARD -s 192.0.2.11/32 -j DROP":   true,
		"-A FORWARD -s 192.0.2.11 -j DROP":      true,
		"ip saddr 192.0.2.11 drop":              true,
		"-A FORWARD -s 192.0.2.110/32 -j DROP":  false,
		"-A FORWARD -d 192.0.2.11/32 -j DROP":   false,
		"-A FORWARD -s 192.0.2.0/24 -j DROP":    false,
		"ip daddr 192.0.2.11 drop":              false,
		"-A FORWARD ! -s 192.0.2.11/32 -j DROP": false,
		"ip saddr != 192.0.2.11 drop":           false,
	} {
		if got := ruleMatchesSource(rule, src); got != want {
			t.Errorf("ruleMatchesSource(%q) = %v, want %v", rule, got, want)
		}
	}
}
