package diagnose

import (
	"net/netip"
	"regexp"
	"strconv"
	"strings"

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
	svcDstRE   = regexp.MustCompile(`-d (\S+)/32 `)
	svcProtoRE = regexp.MustCompile(`-p (tcp|udp|sctp) `)
	svcPortRE  = regexp.MustCompile(`--dport (\d+)`)
	dnatToRE   = regexp.MustCompile(`-j DNAT --to-destination (\S+)`)
)

// kubeServices reads the ClusterIP Services of kube-proxy's iptables mode
// from a namespace's nat table: each KUBE-SERVICES rule commented "NAME
// cluster IP" that jumps to a KUBE-SVC chain, whose KUBE-SEP chains DNAT to
// the endpoints.
func kubeServices(s *nfrules.Snapshot) []kubeService {
	if s == nil {
		return nil
	}
	var out []kubeService
	for _, rs := range []*nfrules.IptRuleset{s.Legacy, s.NFT} {
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
// CoreDNS keeps) port for proto, as some namespace's kube-proxy rules
// program it.
func (d *Diagnoser) clusterDNS(proto string) (kubeService, bool) {
	for _, s := range d.before {
		for _, svc := range kubeServices(s) {
			if strings.HasPrefix(svc.Name, "kube-system/kube-dns") && svc.Proto == proto && svc.Port == 53 {
				return svc, true
			}
		}
	}
	return kubeService{}, false
}
