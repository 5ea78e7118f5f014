package diagnose

import (
	"context"
	"net/netip"
	"regexp"
	"strconv"
	"strings"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nfrules"
)

// kubeService is a Service port as kube-proxy's iptables rules program it
// on a node: name, ClusterIP port and the endpoints it DNATs to.
type kubeService struct {
	Name      string // "kube-system/kube-dns:dns"
	IP        netip.Addr
	Proto     string
	Port      uint16
	Endpoints []string // "10.244.1.2:53"
}

var (
	svcDstRE   = regexp.MustCompile(`-d (\S+)/(?:32|128) `)
	svcProtoRE = regexp.MustCompile(`-p (tcp|udp|sctp) `)
	svcPortRE  = regexp.MustCompile(`--dport (\d+)`)
	dnatToRE   = regexp.MustCompile(`-j DNAT --to-destination (\S+)`)
)

// kubeServices reads the ClusterIP Services of kube-proxy's iptables mode
// from a namespace's nat table: each KUBE-SERVICES rule commented "NAME
// cluster IP" that jumps to a KUBE-SVC chain, whose KUBE-SEP chains DNAT to
// the endpoints. ipv6: the IPv6 Services (ip6tables' rules, written by
// kube-proxy's IPv6 proxier) instead of the IPv4 ones.
func kubeServices(s *nfrules.Snapshot, ipv6 bool) []kubeService {
	if s == nil {
		return nil
	}
	rulesets := []*nfrules.IptRuleset{s.Legacy, s.NFT}
	if ipv6 {
		rulesets = []*nfrules.IptRuleset{s.Legacy6, s.NFT6}
	}
	var out []kubeService
	for _, rs := range rulesets {
		if rs == nil || rs.Tables["nat"] == nil {
			continue
		}
		nat := rs.Tables["nat"]
		top := nat.Chains["KUBE-SERVICES"]
		if top == nil {
			continue
		}
		for _, r := range top.Rules {
			name, ok := strings.CutSuffix(ruleComment(r.Text), " cluster IP")
			if !ok || !strings.HasPrefix(r.Target, "KUBE-SVC-") {
				continue
			}
			svc, ok := parseServiceRule(name, r.Text)
			if !ok {
				continue
			}
			if c := nat.Chains[r.Target]; c != nil {
				for _, sep := range c.Rules {
					if sc := nat.Chains[sep.Target]; strings.HasPrefix(sep.Target, "KUBE-SEP-") && sc != nil {
						for _, d := range sc.Rules {
							if m := dnatToRE.FindStringSubmatch(d.Text); m != nil {
								svc.Endpoints = append(svc.Endpoints, m[1])
							}
						}
					}
				}
			}
			out = append(out, svc)
		}
	}
	return out
}

func parseServiceRule(name, rule string) (kubeService, bool) {
	d, p, port := svcDstRE.FindStringSubmatch(rule), svcProtoRE.FindStringSubmatch(rule), svcPortRE.FindStringSubmatch(rule)
	if d == nil || p == nil || port == nil {
		return kubeService{}, false
	}
	ip, err := netip.ParseAddr(d[1])
	n, perr := strconv.ParseUint(port[1], 10, 16)
	if err != nil || perr != nil {
		return kubeService{}, false
	}
	return kubeService{Name: name, IP: ip, Proto: p[1], Port: uint16(n)}, true
}

// clusterDNS is the cluster DNS Service (kube-system/kube-dns, the name
// CoreDNS keeps) port for proto, as kube-proxy's rules program it in a
// namespace the journey crossed (its iptables rules, read once per
// namespace when first needed) or in one read before the trace. For an
// IPv6 packet the IPv6 Service (ip6tables' rules) comes first, then the
// IPv4 one: a dual-stack cluster's DNS Service is often IPv4 only, and a
// pod's resolv.conf names it all the same. An IPv4 packet reads no
// ip6tables rules.
func (d *Diagnoser) clusterDNS(j *journey.Journey, proto string) (kubeService, bool) {
	families := []bool{false}
	if isIPv6(j.Packet.Dst) {
		families = []bool{true, false}
	}
	for _, ipv6 := range families {
		if svc, ok := d.clusterDNSOf(j, proto, ipv6); ok {
			return svc, true
		}
	}
	return kubeService{}, false
}

// clusterDNSOf is clusterDNS in the rules of one IP version.
func (d *Diagnoser) clusterDNSOf(j *journey.Journey, proto string, ipv6 bool) (kubeService, bool) {
	snaps := make([]*nfrules.Snapshot, 0, len(d.before)+2)
	for _, s := range d.before {
		snaps = append(snaps, s)
	}
	seen := map[uint32]bool{}
	for _, e := range j.Events {
		if !seen[e.Netns] {
			seen[e.Netns] = true
			if s := d.iptablesRules(e.Netns, ipv6); s != nil {
				snaps = append(snaps, s)
			}
		}
	}
	for _, s := range snaps {
		for _, svc := range kubeServices(s, ipv6) {
			if strings.HasPrefix(svc.Name, "kube-system/kube-dns") && svc.Proto == proto && svc.Port == 53 {
				return svc, true
			}
		}
	}
	return kubeService{}, false
}

// isIPv6 tells whether addr (a packet's address as text) is IPv6.
func isIPv6(addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err == nil && a.Unmap().Is6()
}

// iptRulesKey is a namespace's iptables rules of one IP version.
type iptRulesKey struct {
	ino  uint32
	ipv6 bool
}

// iptablesRules is the namespace's iptables rules (both variants) of one
// IP version (ipv6: ip6tables'), read the first time they are asked for;
// nil when they cannot be read.
func (d *Diagnoser) iptablesRules(ino uint32, ipv6 bool) *nfrules.Snapshot {
	if d.cfg.Registry == nil {
		return nil
	}
	key := iptRulesKey{ino, ipv6}
	d.mu.Lock()
	s, ok := d.iptCache[key]
	d.mu.Unlock()
	if ok {
		return s
	}
	if path, found := d.cfg.Registry.Path(netnsutil.Inode(ino)); found {
		kinds := (nfrules.KindLegacy | nfrules.KindIptNFT | nfrules.KindLegacy6 | nfrules.KindIptNFT6).Families(!ipv6, ipv6)
		var err error
		if s, err = nfrules.TakeKinds(context.Background(), path, kinds); err != nil {
			d.cfg.Logger.Debug("reading iptables rules", zap.Uint32("netns", ino), zap.Bool("ipv6", ipv6), zap.Error(err))
		}
	}
	d.mu.Lock()
	d.iptCache[key] = s
	d.mu.Unlock()
	return s
}
