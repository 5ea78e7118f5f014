// Package diagnose turns a journey plus what the node is configured to do
// (routes, VXLAN state, netfilter rules) into findings with evidence and a
// fix. Codes are the contract's and never change meaning.
package diagnose

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/nfrules"
	"github.com/skbtrail/skbtrail/pkg/nftrace"
	"github.com/skbtrail/skbtrail/pkg/nodestate"
	"github.com/skbtrail/skbtrail/pkg/qdisc"
	"github.com/skbtrail/skbtrail/pkg/resolvconf"
	"github.com/skbtrail/skbtrail/pkg/sockdiag"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// Finding codes of the contract.
const (
	CodeNFPolicyDrop     = "NF_POLICY_DROP"
	CodeNFRuleDrop       = "NF_RULE_DROP"
	CodeNFReject         = "NF_REJECT"
	CodeCTInvalid        = "CT_INVALID"
	CodeServiceNotDNATed = "SERVICE_NOT_DNATED"
	CodeVXLANDstUnknown  = "VXLAN_DST_UNKNOWN"
	CodeVXLANSrcMismatch = "VXLAN_SRC_MISMATCH"
	CodeNoRoute          = "NO_ROUTE"
	CodeNoListener       = "NO_LISTENER"
	CodeMTUExceeded      = "MTU_EXCEEDED"
	CodeNoReply          = "NO_REPLY"
	CodeRPFilter         = "RP_FILTER"
	CodeEventsLost       = "EVENTS_LOST"
	CodeLeftNode         = "LEFT_NODE"
	// CodeBPFProgDrop: a tc program (or a generic-mode XDP program) was
	// seen dropping the packet; the finding names it.
	CodeBPFProgDrop = "BPF_PROG_DROP"
	// CodeXDPProgDrop: inferred, not seen: the packet was handed to a
	// device whose receiving end runs an XDP program, and no skb of it
	// showed up there (an XDP drop leaves none).
	CodeXDPProgDrop = "XDP_PROG_DROP"
	// CodeServiceNoEndpoints: kube-proxy refused a packet to a Service port
	// that has no ready endpoint.
	CodeServiceNoEndpoints = "SERVICE_NO_ENDPOINTS"
	// CodeSocketQueueFull: a socket's queue (receive buffer, accept queue,
	// backlog) was full and the kernel dropped the packet.
	CodeSocketQueueFull = "SOCKET_QUEUE_FULL"
	// CodeQdiscDrop: a device's queue (its qdisc, or the CPU input
	// backlog) dropped the packet.
	CodeQdiscDrop = "QDISC_DROP"
	// CodeNeighFailed: the next hop's link-layer address could not be
	// resolved (no neighbour entry, resolution failed or its queue
	// overflowed).
	CodeNeighFailed = "NEIGH_FAILED"
	// CodeConntrackFull: the namespace's connection tracking table was
	// full and netfilter dropped a new connection's packet.
	CodeConntrackFull = "CONNTRACK_FULL"
	// CodeDNSConfig: the source pod's resolv.conf does not name the
	// cluster DNS Service.
	CodeDNSConfig = "DNS_CONFIG"
	// CodeDNSService: a DNS query to the cluster DNS Service, with the
	// Service's endpoints (info).
	CodeDNSService = "DNS_SERVICE"
)

// Config configures a Diagnoser.
type Config struct {
	ServiceCIDR netip.Prefix
	// ServiceCIDRs are further Service ranges (a dual-stack cluster's
	// other IP version).
	ServiceCIDRs []netip.Prefix
	// IPv4Only: the traced packets are IPv4 (the filter names an IPv4
	// address), so only IPv4 rules are read.
	IPv4Only bool
	Logger   *zap.Logger
	// Registry names and opens the namespaces whose state is read; nil:
	// only what the journey itself shows is diagnosed.
	Registry *netnsutil.Registry
	// NodeIPs are the addresses peers know this node by (flannel's
	// public-ip), for single nodes where no peer FDB can be read.
	NodeIPs []netip.Addr
	// NodeAddrs maps the addresses of the cluster's nodes to node names
	// (cluster mode), to name the node a packet that left went to; nil:
	// only the namespaces of this kernel can be named.
	NodeAddrs map[netip.Addr]string
	// Programs lists the eBPF programs on a device, to name the one that
	// dropped a packet; nil: read them from the kernel through Registry.
	Programs ProgramLister
	// VethPeers confirms which namespace a veth's peer is in; nil: ask
	// the kernel through Registry.
	VethPeers VethPeers
	// Flannel: where flannel's own state (subnet file, leases) is read.
	Flannel FlannelConfig
	// NFTrace, when set, marks the packets it matches for nf_tables
	// tracing in every namespace with nf_tables rules (Prepare; Close
	// removes the marks), so a netfilter drop names its rule exactly.
	NFTrace *nftrace.Match
}

// Diagnoser adds findings to journeys.
type Diagnoser struct {
	cfg       Config
	mu        sync.Mutex                        // guards before, traces, ruleStats while Prepare runs
	before    map[uint32]*nfrules.Snapshot      // netns inode -> iptables-legacy rules at start
	traces    map[uint32]*nftrace.Tracing       // netns inode -> nf_tables tracing there
	iptCache  map[iptRulesKey]*nfrules.Snapshot // netns inode and IP version -> iptables rules read when first needed
	ruleStats RuleStats
	state     *nodestate.State // devices, VXLAN, FDB, routes
	progs     ProgramLister    // nil: programs are not named
	peers     VethPeers        // nil: veth peers by ifindex only
	// sockets lists the TCP listeners and UDP sockets of a namespace (by
	// inode); nil: not known.
	sockets func(netns uint32) ([]sockdiag.Socket, error)
	// process finds the process holding a socket (by inode); nil: none.
	process func(sockInode uint32) (sockdiag.Process, bool)
	// qdiscs reads a device's queueing disciplines; nil: not known.
	qdiscs func(netns uint32, dev string) ([]qdisc.Qdisc, error)
	// lookupHop finds a namespace's next hop to an address; nil: not known.
	lookupHop func(netns uint32, dst netip.Addr) (neighHop, bool)
	// conntrackUse reads a namespace's conntrack entry count and limit;
	// nil: not known.
	conntrackUse func(netns uint32) (count, limit int, ok bool)
	// resolvConf reads the DNS configuration of a process in a namespace
	// and its PID; nil: not known.
	resolvConf func(netns uint32) (resolvconf.Config, int, bool)
	// flannel's own state (nil: not read)
	flannel *flannelView
}

// add appends a finding (one per code).
func (d *Diagnoser) add(j *journey.Journey, f journey.Finding) { j.AddFinding(f) }

// New returns a Diagnoser.
func New(cfg Config) *Diagnoser {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	d := &Diagnoser{cfg: cfg, before: map[uint32]*nfrules.Snapshot{}, traces: map[uint32]*nftrace.Tracing{}, iptCache: map[iptRulesKey]*nfrules.Snapshot{}, progs: cfg.Programs, peers: cfg.VethPeers}
	if d.progs == nil && cfg.Registry != nil {
		d.progs = kernelPrograms{cfg.Registry}
	}
	if d.peers == nil && cfg.Registry != nil {
		d.peers = kernelPeers{cfg.Registry}
	}
	if cfg.Registry != nil {
		d.readKernelState(cfg.Registry)
	}
	return d
}

// Prepare reads the node state that must be known before packets flow
// (devices, routes, FDB; flannel's state) and readies netfilter
// attribution (prepareRules), the two in parallel.
func (d *Diagnoser) Prepare(ctx context.Context) error {
	if d.cfg.Registry == nil {
		return nil
	}
	rules := make(chan error, 1)
	go func() { rules <- d.prepareRules(ctx) }()
	st, err := nodestate.Read(d.cfg.Registry)
	d.state = st
	d.readFlannel(ctx)
	if rerr := <-rules; rerr != nil && err == nil {
		err = rerr
	}
	return err
}

// flowText is "src:sport -> dst:dport" ("[a]:port" for IPv6, no port
// when it is 0).
func flowText(p journey.Packet) string {
	return journey.HostPort(p.Src, p.Sport) + " -> " + journey.HostPort(p.Dst, p.Dport)
}

// tupleFlow is flowText of a journey.Tuple.
func tupleFlow(t journey.Tuple) string { return flowText(journey.PacketOf(t)) }

// Diagnose adds the findings the journey supports, most specific first.
func (d *Diagnoser) Diagnose(j *journey.Journey) {
	defer func() {
		sort.SliceStable(j.Findings, func(a, b int) bool {
			return findingRank[j.Findings[a].Code] < findingRank[j.Findings[b].Code]
		})
	}()
	if j.LostEvents > 0 {
		j.AddFinding(journey.Finding{
			Code: CodeEventsLost, Severity: journey.SeverityWarning,
			Message: fmt.Sprintf("%d trace events were lost (ring buffer or channel full); the journey may be incomplete", j.LostEvents),
			Advice:  "narrow the filter or trace when the node is less busy",
		})
	}
	// first: where it was delivered, and whether the packet left
	d.redirectedDelivery(j)
	d.leftNode(j)
	d.serviceNotDNATed(j)
	d.netfilterDecision(j)
	d.conntrackFull(j)
	d.bpfProgDrop(j)
	d.xdpProgDrop(j)
	d.underlay(j)
	demoteUnderlayRuleDrop(j)
	d.endpoint(j)
	d.socketQueue(j)
	d.queueDrop(j)
	d.neighFailure(j)
	d.dns(j)
	v := j.Verdict
	switch v.Reason {
	case "IP_INNOROUTES", "IP_OUTNOROUTES":
		dst, what := droppedDst(j)
		f := journey.Finding{
			Code: CodeNoRoute, Severity: journey.SeverityError, Netns: v.Netns,
			Message: fmt.Sprintf("%s has no route to %s (%s of %s); dropped %s at %s", v.Netns, dst, what, flowText(j.Packet), v.Reason, v.Device),
			Advice:  fmt.Sprintf("add a route to %s in %s (ip route get %s shows what is missing)", dst, v.Netns, dst),
		}
		// the outer destination is a wrong VTEP announcement: the missing
		// route is its consequence, not the thing to fix
		if wrongVTEPAnnounced(j) && what == outerDstWhat {
			f.Severity = journey.SeverityWarning
			f.Advice = fmt.Sprintf("a consequence of %s: %s is not an address the peer should be reached at; fix the VTEP address the peer announces (see %s) instead of routing it", CodeVXLANDstUnknown, dst, CodeVXLANDstUnknown)
		}
		j.AddFinding(f)
	case "IP_RPFILTER":
		j.AddFinding(journey.Finding{
			Code: CodeRPFilter, Severity: journey.SeverityError, Netns: v.Netns,
			Message: fmt.Sprintf("reverse-path filter in %s dropped %s arriving on %s: its route back to %s does not go through %s", v.Netns, atDrop(j), v.Device, atDropSrc(j), v.Device),
			Advice:  "fix the return route, or set net.ipv4.conf." + v.Device + ".rp_filter=2 (loose)",
		})
	}
}

// atDrop is the packet's flow where it was dropped (after NAT).
func atDrop(j *journey.Journey) string {
	if n := len(j.Events); n > 0 {
		t := j.Events[n-1].Pkt
		if t.Src.IsValid() {
			return flowText(journey.PacketOf(t))
		}
	}
	return flowText(j.Packet)
}

func atDropSrc(j *journey.Journey) string {
	if n := len(j.Events); n > 0 && j.Events[n-1].Pkt.Src.IsValid() {
		return j.Events[n-1].Pkt.Src.String()
	}
	return j.Packet.Src
}

// findingRank orders findings: the most specific cause first.
var findingRank = map[string]int{
	CodeServiceNotDNATed: 0, CodeServiceNoEndpoints: 0, CodeVXLANDstUnknown: 1, CodeVXLANSrcMismatch: 1, CodeMTUExceeded: 2,
	CodeCTInvalid: 3, CodeSocketQueueFull: 3, CodeQdiscDrop: 3, CodeNeighFailed: 3, CodeConntrackFull: 3,
	CodeNFPolicyDrop: 4, CodeNFRuleDrop: 4, CodeNFReject: 4, CodeRPFilter: 4, CodeNoListener: 4, CodeBPFProgDrop: 4, CodeXDPProgDrop: 4, CodeDNSConfig: 4,
	CodeNoRoute: 5, CodeNoReply: 6, CodeLeftNode: 7, CodeDNSService: 8, CodeEventsLost: 9,
}

const outerDstWhat = "the VXLAN outer destination"

// wrongVTEPAnnounced: the underlay finding says the packet went to a VTEP
// address that is not one the peer can be reached at (an unknown VTEP, or
// a known one whose node holds a routed address).
func wrongVTEPAnnounced(j *journey.Journey) bool {
	for _, f := range j.Findings {
		if f.Code == CodeVXLANDstUnknown && (strings.Contains(f.Advice, publicIPAnnotations) || strings.Contains(f.Advice, calicoAutodetectSuffix)) {
			return true
		}
	}
	return false
}

// droppedDst is the destination the kernel failed to route: the outer one
// for an encapsulated packet.
func droppedDst(j *journey.Journey) (string, string) {
	for i := len(j.Events) - 1; i >= 0; i-- {
		e := j.Events[i]
		if e.Kind == journey.KindDrop || e.Kind == journey.KindNF {
			if e.Encap {
				return e.Outer.Dst.String(), outerDstWhat
			}
			if e.Kind == journey.KindDrop {
				return e.Pkt.Dst.String(), "the destination"
			}
		}
	}
	return j.Packet.Dst, "the destination"
}

// serviceNotDNATed: a packet to the service range left a node still
// addressed to the ClusterIP: sent by a namespace other than the one it
// started in (the pod's), with the Service address as destination.
func (d *Diagnoser) serviceNotDNATed(j *journey.Journey) {
	if len(j.Events) == 0 {
		return
	}
	origin := j.Events[0].Netns
	for _, e := range j.Events {
		if e.Kind != journey.KindTx || e.Netns == origin || !d.cfg.InServiceRange(e.Pkt.Dst) {
			continue
		}
		save := "iptables-save"
		if e.Pkt.Dst.Is6() {
			save = "ip6tables-save"
		}
		ns := j.NetnsName(e.Netns)
		j.AddFinding(journey.Finding{
			Code: CodeServiceNotDNATed, Severity: journey.SeverityError, Netns: ns,
			Message: fmt.Sprintf("%s left %s through %s still addressed to the Service IP %s: no DNAT to an endpoint happened", flowText(j.Packet), ns, e.Ifname, e.Pkt.Dst),
			Advice:  "check kube-proxy on this node: the Service needs KUBE-SERVICES/KUBE-SVC-*/KUBE-SEP-* DNAT rules (" + save + " -t nat | grep " + e.Pkt.Dst.String() + ") and at least one ready endpoint",
		})
		return
	}
}

// InServiceRange reports whether a is in a Service range of the config.
func (c Config) InServiceRange(a netip.Addr) bool {
	if c.ServiceCIDR.IsValid() && c.ServiceCIDR.Contains(a) {
		return true
	}
	for _, p := range c.ServiceCIDRs {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
