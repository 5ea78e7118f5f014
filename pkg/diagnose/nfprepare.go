package diagnose

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nfrules"
	"github.com/skbtrail/skbtrail/pkg/nftrace"
)

// prepareWorkers bounds the namespaces prepared at once (the work is CPU
// in the kernel: more workers than cores only contend; measured with 250
// namespaces on 2 cores: 4 workers ~200 ms, 16 ~360 ms).
const prepareWorkers = 4

// RuleStats says what the rule preparation did across namespaces.
type RuleStats struct {
	Traced     int // namespaces with nf_tables rules: marked and listened to
	NoRules    int // namespaces without nf_tables or legacy rules: skipped
	Legacy     int // namespaces with iptables-legacy tables: counters read
	Failed     int // namespaces where preparing failed (logged)
	NoMatching bool
}

// String is the ready line's account of the rule work.
func (s RuleStats) String() string {
	out := fmt.Sprintf("nftrace in %d namespaces with nf_tables rules (%d without rules skipped)", s.Traced, s.NoRules)
	if s.NoMatching {
		out = fmt.Sprintf("%d namespaces without rules skipped", s.NoRules)
	}
	if s.Legacy > 0 {
		out += fmt.Sprintf(", iptables-legacy counters in %d", s.Legacy)
	}
	if s.Failed > 0 {
		out += fmt.Sprintf(", %d failed", s.Failed)
	}
	return out
}

// prepareRules readies netfilter attribution in every namespace, in
// parallel: where nf_tables has rules, a marking table for the trace's
// packets and a trace event subscription (NFTrace set); where legacy
// iptables has tables (/proc/net/ip_tables_names, no tool run to know), a
// counter snapshot. Namespaces with neither are skipped.
func (d *Diagnoser) prepareRules(ctx context.Context) error {
	if d.cfg.Registry == nil {
		return nil
	}
	var entries []netnsutil.Entry
	for _, e := range d.cfg.Registry.All() {
		if e.Path != "" && d.cfg.Registry.InScope(e.Inode) {
			entries = append(entries, e)
		}
	}
	var wg sync.WaitGroup
	work := make(chan netnsutil.Entry)
	var mu sync.Mutex
	var errs []error
	for range min(prepareWorkers, len(entries)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for e := range work {
				if err := d.prepareNetns(ctx, e); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					d.mu.Lock() // ruleStats is d.mu's, as in prepareNetns
					d.ruleStats.Failed++
					d.mu.Unlock()
				}
			}
		}()
	}
	for _, e := range entries {
		work <- e
	}
	close(work)
	wg.Wait()
	if len(errs) > 3 {
		errs = append(errs[:3], fmt.Errorf("and %d more namespaces", len(errs)-3))
	}
	return errors.Join(errs...)
}

// prepareNetns prepares one namespace (see prepareRules).
func (d *Diagnoser) prepareNetns(ctx context.Context, e netnsutil.Entry) error {
	var legacy nfrules.Kinds // the legacy iptables/ip6tables with tables here
	var tr *nftrace.Tracing
	err := netnsutil.Do(e.Path, func() error {
		// sockets made here belong to this namespace
		legacy = hasLegacyTables(!d.cfg.IPv4Only)
		if d.cfg.NFTrace == nil {
			return nil
		}
		var err error
		tr, err = nftrace.Start(0, *d.cfg.NFTrace)
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil // the namespace went away meanwhile: nothing to prepare
	}
	if err != nil {
		return fmt.Errorf("netfilter attribution in %s: %w", e.Name, err)
	}
	if legacy != 0 {
		s, err := nfrules.TakeKinds(ctx, e.Path, legacy)
		if err != nil {
			d.cfg.Logger.Warn("iptables-legacy counters", zap.String("netns", e.Name), zap.Error(err))
		}
		d.mu.Lock()
		d.before[uint32(e.Inode)] = s
		d.mu.Unlock()
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if tr != nil {
		d.traces[uint32(e.Inode)] = tr
		d.ruleStats.Traced++
	}
	if legacy != 0 {
		d.ruleStats.Legacy++
	}
	if legacy == 0 && tr == nil {
		d.ruleStats.NoRules++
	}
	return nil
}

// hasLegacyTables says whether the calling thread's namespace has
// iptables-legacy (x_tables) tables: the kernel lists them in
// ip_tables_names (absent: the module is not loaded, so none).
func hasLegacyTables(ipv6 bool) nfrules.Kinds {
	var k nfrules.Kinds
	has := func(file string) bool {
		b, err := os.ReadFile("/proc/thread-self/net/" + file)
		return err == nil && len(strings.TrimSpace(string(b))) > 0
	}
	if has("ip_tables_names") {
		k |= nfrules.KindLegacy
	}
	if ipv6 && has("ip6_tables_names") {
		k |= nfrules.KindLegacy6
	}
	return k
}

// Close removes the marking tables and ends the trace subscriptions.
func (d *Diagnoser) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	for ino, tr := range d.traces {
		errs = append(errs, tr.Close()) // the marking table goes with the socket
		if n := tr.Lost.Load() + tr.Forgotten.Load() + tr.Bad.Load(); n > 0 {
			d.cfg.Logger.Info("nftrace events not kept", zap.Uint32("netns", ino),
				zap.Uint64("lost", tr.Lost.Load()), zap.Uint64("forgotten", tr.Forgotten.Load()), zap.Uint64("bad", tr.Bad.Load()))
		}
		delete(d.traces, ino)
	}
	return errors.Join(errs...)
}

// RuleStats says what the rule preparation did (for the ready line).
func (d *Diagnoser) RuleStats() RuleStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	s := d.ruleStats
	s.NoMatching = d.cfg.NFTrace == nil
	return s
}

// nftraceWait is how long a diagnosis waits for a drop's trace event
// (it comes over a socket and may trail the journey).
const nftraceWait = 300 * time.Millisecond

// tracedDrop is the nf_tables trace's account of the journey's drop in the
// namespace ino: the newest traced drop of a packet the journey was in that
// namespace (any of its tuples there: NAT changes them between hooks).
func (d *Diagnoser) tracedDrop(j *journey.Journey, ino uint32) (nfrules.TracedDrop, bool) {
	d.mu.Lock()
	tr := d.traces[ino]
	d.mu.Unlock()
	if tr == nil {
		return nfrules.TracedDrop{}, false
	}
	var seen []journey.Tuple
	for _, e := range j.Events {
		if e.Netns != ino {
			continue
		}
		seen = append(seen, e.Pkt)
		if e.Encap {
			seen = append(seen, e.Outer)
		}
	}
	ev, ok := tr.FindDrop(func(ev nftrace.Event) bool {
		if !ev.HasPacket {
			return false
		}
		for _, t := range seen {
			if sameFlow(ev.Packet, t) {
				return true
			}
		}
		return false
	}, nftraceWait)
	if !ok {
		return nfrules.TracedDrop{}, false
	}
	return nfrules.TracedDrop{
		Family: nftFamily(ev.Family), Table: ev.Table, Chain: ev.Chain, BaseChain: ev.BaseChain,
		Handle: ev.Handle, Policy: ev.Kind == nftrace.KindPolicy,
	}, true
}

// sameFlow says whether a traced packet is the journey's packet t.
func sameFlow(p nftrace.Tuple, t journey.Tuple) bool {
	if p.Proto != t.Proto || p.Src != t.Src || p.Dst != t.Dst {
		return false
	}
	if p.Proto == journey.ProtoTCP || p.Proto == journey.ProtoUDP {
		return p.Sport == t.Sport && p.Dport == t.Dport
	}
	return true
}

// nftFamily names an nfgenmsg family as nft does.
func nftFamily(f uint8) string {
	switch f {
	case unix.NFPROTO_IPV4:
		return "ip"
	case unix.NFPROTO_IPV6:
		return "ip6"
	case unix.NFPROTO_INET:
		return "inet"
	case unix.NFPROTO_ARP:
		return "arp"
	case unix.NFPROTO_BRIDGE:
		return "bridge"
	case unix.NFPROTO_NETDEV:
		return "netdev"
	}
	return fmt.Sprintf("family%d", f)
}
