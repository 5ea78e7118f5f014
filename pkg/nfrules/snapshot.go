package nfrules

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"time"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nftrace"
)

// Snapshot is a namespace's rules (and counters) at one moment.
type Snapshot struct {
	Legacy *IptRuleset // iptables-legacy-save -c (nil: not installed or empty)
	NFT    *IptRuleset // iptables-nft-save -c
	Nft    *NftRuleset // nft -j list ruleset
	Errs   []error     // tools that failed (the snapshot is partial)
	// Legacy6 and NFT6 are the IPv6 rules: ip6tables-legacy-save -c and
	// ip6tables-nft-save -c.
	Legacy6, NFT6 *IptRuleset
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	path, err := exec.LookPath(name)
	if err != nil {
		return "", nil // not installed: nothing of that kind here
	}
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return string(out), nil
}

// Kinds selects what a snapshot reads.
type Kinds uint8

const (
	KindLegacy  Kinds = 1 << iota // iptables-legacy-save -c
	KindIptNFT                    // iptables-nft-save -c
	KindNft                       // nft -j list ruleset (and nft -a for the rule texts)
	KindLegacy6                   // ip6tables-legacy-save -c
	KindIptNFT6                   // ip6tables-nft-save -c
	KindAll     = KindLegacy | KindIptNFT | KindNft | KindLegacy6 | KindIptNFT6
)

// Families keeps of k the iptables kinds of the IP versions asked for (and
// nft's, which serve both).
func (k Kinds) Families(ipv4, ipv6 bool) Kinds {
	if !ipv4 {
		k &^= KindLegacy | KindIptNFT
	}
	if !ipv6 {
		k &^= KindLegacy6 | KindIptNFT6
	}
	return k
}

// toolTimeout bounds the tools one snapshot runs.
const toolTimeout = 5 * time.Second

// TakeKinds reads the rules of the namespace at nsPath that kinds selects.
// The tools run inside the namespace (a locked thread in it forks them),
// all of them within toolTimeout.
func TakeKinds(ctx context.Context, nsPath string, kinds Kinds) (*Snapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, toolTimeout)
	defer cancel()
	s := &Snapshot{}
	err := netnsutil.Do(nsPath, func() error {
		if kinds&KindLegacy != 0 {
			s.Legacy = s.iptablesSave(ctx, "iptables-legacy-save", "legacy")
		}
		if kinds&KindIptNFT != 0 {
			s.NFT = s.iptablesSave(ctx, "iptables-nft-save", "nft")
		}
		if kinds&KindLegacy6 != 0 {
			s.Legacy6 = s.iptablesSave(ctx, "ip6tables-legacy-save", "legacy")
		}
		if kinds&KindIptNFT6 != 0 {
			s.NFT6 = s.iptablesSave(ctx, "ip6tables-nft-save", "nft")
		}
		if kinds&KindNft == 0 {
			return nil
		}
		js, err := nftRulesetJSON(ctx)
		if err != nil {
			s.Errs = append(s.Errs, err)
			return nil
		}
		if js == "" {
			return nil
		}
		text, err := output(ctx, "nft", "-a", "list", "ruleset")
		if err != nil {
			s.Errs = append(s.Errs, err)
		}
		if s.Nft, err = ParseNftJSON([]byte(js), text); err != nil {
			s.Errs = append(s.Errs, err)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read netfilter rules in %s: %w", nsPath, err)
	}
	return s, errors.Join(s.Errs...)
}

// nftRulesetJSON is `nft -j list ruleset` without skbtrail's own marking tables
// (nftrace.MarkerPrefix): nft 1.0.6 prints an owner-flagged table's flags
// as garbage in JSON (seen: the table's name, or the output cut short in
// the middle), so every other table is listed on its own and the lists
// joined. "" when there is no table.
func nftRulesetJSON(ctx context.Context) (string, error) {
	tables, err := output(ctx, "nft", "list", "tables")
	if err != nil {
		return "", err
	}
	var items []json.RawMessage
	for _, line := range strings.Split(tables, "\n") {
		f := strings.Fields(line)
		if len(f) != 3 || f[0] != "table" || strings.HasPrefix(f[2], nftrace.MarkerPrefix) {
			continue
		}
		js, err := output(ctx, "nft", "-j", "list", "table", f[1], f[2])
		if err != nil {
			return "", err
		}
		var doc struct {
			Nftables []json.RawMessage `json:"nftables"`
		}
		if err := json.Unmarshal([]byte(js), &doc); err != nil {
			return "", fmt.Errorf("nft -j list table %s %s: %w", f[1], f[2], err)
		}
		items = append(items, doc.Nftables...)
	}
	if len(items) == 0 {
		return "", nil
	}
	out, err := json.Marshal(map[string][]json.RawMessage{"nftables": items})
	return string(out), err
}

// iptablesSave runs an iptables-save variant; nil when it has no tables.
func (s *Snapshot) iptablesSave(ctx context.Context, tool, variant string) *IptRuleset {
	out, err := output(ctx, tool, "-c")
	if err != nil {
		s.Errs = append(s.Errs, err)
		return nil
	}
	if !strings.Contains(out, "*") {
		return nil
	}
	rs, err := ParseIptablesSave(variant, out)
	if err != nil {
		s.Errs = append(s.Errs, err)
	}
	return rs
}

var nftHooks = map[uint8]string{
	journey.HookPreRouting: "prerouting", journey.HookLocalIn: "input", journey.HookForward: "forward",
	journey.HookLocalOut: "output", journey.HookPostRouting: "postrouting",
}

// iptTables are the iptables tables whose priority lies after an observer stage.
func iptTables(hook, stage uint8) []string {
	return journey.TablesAfterStage(hook, stage)
}

// Decide explains a netfilter drop at hook, after observer stage (the last
// observer that saw the packet), from the rules and counters before and after.
func Decide(before, after *Snapshot, hook, stage uint8, pkt Packet) (Decision, bool) {
	if after == nil {
		return Decision{}, false
	}
	chain := journey.HookName(hook)
	var policies []Decision
	v6 := pkt.Tuple.Dst.Is6() // ip6tables and the nft ip6 family decided
	pairs := []struct{ b, a *IptRuleset }{{pick(before, true), after.Legacy}, {pick(before, false), after.NFT}}
	if v6 {
		pairs = []struct{ b, a *IptRuleset }{{pick6(before, true), after.Legacy6}, {pick6(before, false), after.NFT6}}
	}
	for _, pair := range pairs {
		if pair.a == nil {
			continue
		}
		for _, table := range iptTables(hook, stage) {
			if d, ok := DropByCounters(pair.b, pair.a, table, chain); ok {
				if v6 {
					d.Family = "ip6" // ip6tables' rules
				}
				if !d.IsPolicy() {
					return d, true
				}
				policies = append(policies, d)
			}
		}
	}
	if after.Nft != nil {
		lo, hi := stageRange(hook, stage)
		skip := map[string]bool{}
		if after.NFT != nil && !v6 {
			for t := range after.NFT.Tables {
				skip["ip/"+t] = true
			}
		}
		if after.NFT6 != nil && v6 {
			for t := range after.NFT6.Tables {
				skip["ip6/"+t] = true
			}
		}
		if d, ok := after.Nft.DropAt(nftHooks[hook], lo, hi, pkt, skip); ok {
			if !d.IsPolicy() {
				return d, true
			}
			policies = append(policies, d)
		}
	}
	if len(policies) > 0 {
		return policies[0], true
	}
	return Decision{}, false
}

func pick(s *Snapshot, legacy bool) *IptRuleset {
	if s == nil {
		return nil
	}
	if legacy {
		return s.Legacy
	}
	return s.NFT
}

func pick6(s *Snapshot, legacy bool) *IptRuleset {
	if s == nil {
		return nil
	}
	if legacy {
		return s.Legacy6
	}
	return s.NFT6
}

func stageRange(hook, stage uint8) (int, int) {
	lo, hi := journey.StageRange(hook, stage)
	return int(lo), int(hi)
}
