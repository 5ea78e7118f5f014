package diagnose

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
)

// Conntrack's sysctls: the namespace's entry count (read inside it) and
// the machine's limit (one value for every namespace; writable only in the
// initial one).
const (
	conntrackCount = "/proc/sys/net/netfilter/nf_conntrack_count"
	conntrackMax   = "/proc/sys/net/netfilter/nf_conntrack_max"
)

// conntrackFull explains a netfilter drop no rule or policy explains in a
// namespace whose connection tracking table is full: conntrack refuses new
// entries and the hook drops the packet (the kernel logs "nf_conntrack:
// table full, dropping packet").
func (d *Diagnoser) conntrackFull(j *journey.Journey) {
	v := j.Verdict
	if v.Reason != "NETFILTER_DROP" || v.Rule != "" || v.Kind != journey.Dropped || d.conntrackUse == nil {
		return
	}
	count, limit, ok := d.conntrackUse(v.NetnsInode)
	if !ok || limit <= 0 || count < limit {
		return
	}
	hook := ""
	if v.Hook != "" {
		hook = " at " + v.Hook
	}
	j.AddFinding(journey.Finding{Code: CodeConntrackFull, Severity: journey.SeverityError, Netns: v.Netns,
		Message: fmt.Sprintf("the connection tracking table of %s is full (%d entries, limit net.netfilter.nf_conntrack_max = %d): netfilter dropped %s%s with no rule deciding",
			v.Netns, count, limit, atDrop(j), hook),
		Advice: fmt.Sprintf("find what fills it (conntrack -C and conntrack -L in %s, grouped by source), shorten the timeouts of idle entries (net.netfilter.nf_conntrack_tcp_timeout_established), "+
			"exempt heavy flows from tracking (raw table NOTRACK), or raise net.netfilter.nf_conntrack_max on the node (one limit for every namespace)", v.Netns),
	})
}

// readConntrackUse reads the namespace's conntrack entry count and the
// machine's limit.
func readConntrackUse(nsPath string) (count, limit int, ok bool) {
	readInt := func(path string) (int, error) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, err
		}
		return strconv.Atoi(strings.TrimSpace(string(b)))
	}
	err := netnsutil.Do(nsPath, func() error {
		var err error
		if count, err = readInt(conntrackCount); err != nil {
			return err
		}
		limit, err = readInt(conntrackMax)
		return err
	})
	return count, limit, err == nil
}
