package diagnose

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/nfrules"
)

// ruleOwner is the component that writes a netfilter rule and puts it back
// when someone deletes it: advice names it and what to change there instead
// of telling the user to delete the rule.
type ruleOwner struct {
	Name string // "kube-proxy", "flannel", "Docker", ...
	Fix  string // what to change in that component
}

const (
	kubeProxyFix = "kube-proxy writes it from the Services and their EndpointSlices and puts it back on its next sync: change the Service, its endpoints or kube-proxy's configuration, not the rule"
	cniPolicyFix = "the CNI writes it (from its configuration and the NetworkPolicies it enforces, kubectl get networkpolicy -A) and puts it back: change those, not the rule"
	dockerFix    = "Docker rewrites its chains whenever it starts: put your own rules in the DOCKER-USER chain, which Docker keeps and consults first, or change the Docker network's configuration"
)

// chainOwners maps iptables chain name prefixes to their owner, most
// specific first. Chains meant for the administrator's own rules
// (DOCKER-USER, CNI-ADMIN) have no owner.
var chainOwners = []struct {
	prefix string
	owner  ruleOwner
}{
	{"DOCKER-USER", ruleOwner{}},
	{"CNI-ADMIN", ruleOwner{}},
	{"KUBE-ROUTER-", ruleOwner{"kube-router", cniPolicyFix}},
	{"KUBE-NWPLCY-", ruleOwner{"kube-router", cniPolicyFix}},
	{"KUBE-POD-FW-", ruleOwner{"kube-router", cniPolicyFix}},
	{"KUBE-FIREWALL", ruleOwner{"kubelet and kube-proxy", "kubelet and kube-proxy write it (it drops packets marked for dropping and martian packets to 127.0.0.0/8) and put it back: fix what sends those packets, not the rule"}},
	{"KUBE-", ruleOwner{"kube-proxy", kubeProxyFix}},
	{"FLANNEL-", ruleOwner{"flannel", "flannel writes it from its network configuration (net-conf.json) and puts it back: change that configuration, not the rule"}},
	{"cali-", ruleOwner{"Calico", "Calico (Felix) writes it from its configuration and the NetworkPolicies / Calico policies it enforces and puts it back: change those (kubectl get networkpolicy -A), not the rule"}},
	{"CILIUM_", ruleOwner{"Cilium", "Cilium writes it and puts it back: change Cilium's configuration or the policies it enforces, not the rule"}},
	{"WEAVE-", ruleOwner{"Weave Net", cniPolicyFix}},
	{"CNI-", ruleOwner{"a CNI plugin (portmap, firewall or bridge)", "the CNI plugin writes it when it sets up a pod (hostPort, the bridge's ipMasq) and removes it with the pod: change the pod or the CNI configuration (/etc/cni/net.d), not the rule"}},
	{"DOCKER", ruleOwner{"Docker", dockerFix}},
}

// nftTableOwners maps native nftables table names to their owner.
var nftTableOwners = map[string]ruleOwner{
	"kube-proxy": {"kube-proxy", kubeProxyFix},
	"calico":     {"Calico", "Calico (Felix) writes it and puts it back: change Calico's configuration or the policies it enforces, not the rule"},
	"cilium":     {"Cilium", "Cilium writes it and puts it back: change Cilium's configuration or the policies it enforces, not the rule"},
}

// ruleOwnerOf names the component that owns the rule or policy that decided,
// if skbtrail recognises it. dockerFilter says the iptables filter table of
// the decision holds Docker's chains (Docker sets FORWARD's policy to DROP).
func ruleOwnerOf(dec nfrules.Decision, dockerFilter bool) (ruleOwner, bool) {
	if dec.Source == "nft" {
		o, ok := nftTableOwners[dec.Table]
		return o, ok
	}
	if dec.IsPolicy() {
		if dockerFilter && dec.Table == "filter" && dec.Chain == "FORWARD" {
			return ruleOwner{"Docker", dockerFix}, true
		}
		return ruleOwner{}, false
	}
	for _, c := range chainOwners {
		if strings.HasPrefix(dec.Chain, c.prefix) {
			return c.owner, c.owner.Name != ""
		}
	}
	return ruleOwner{}, false
}

// hasDockerChains reports whether the iptables table of dec (same back end
// and IP version: dockerd writes its chains in ip6tables too) holds
// Docker's chains.
func hasDockerChains(s *nfrules.Snapshot, dec nfrules.Decision) bool {
	if s == nil {
		return false
	}
	rs := s.NFT
	switch {
	case dec.Source == "iptables-legacy" && dec.Family == "ip6":
		rs = s.Legacy6
	case dec.Source == "iptables-legacy":
		rs = s.Legacy
	case dec.Family == "ip6":
		rs = s.NFT6
	}
	if rs == nil || rs.Tables[dec.Table] == nil {
		return false
	}
	for name := range rs.Tables[dec.Table].Chains {
		if name == "DOCKER" || strings.HasPrefix(name, "DOCKER-") {
			return true
		}
	}
	return false
}

// ownedAdvice replaces "delete the rule" for a rule a component owns.
func ownedAdvice(o ruleOwner, dec nfrules.Decision) string {
	where := dec.Table + "/" + dec.Chain
	if dec.Source == "nft" {
		where = "chain " + dec.Chain + " of table " + dec.Family + " " + dec.Table
	}
	return fmt.Sprintf("do not delete it: %s belongs to %s; %s", where, o.Name, o.Fix)
}

var (
	iptCommentRE = regexp.MustCompile(`--comment (?:"((?:[^"\\]|\\.)*)"|(\S+))`)
	// kube-proxy's iptables REJECT for a Service port without ready
	// endpoints is commented "NS/SVC:PORT has no endpoints" (":PORT" only
	// when the port is named); its DROP for a traffic policy Local without
	// a ready endpoint on this node "NS/SVC:PORT has no local endpoints".
	noEndpointsRE = regexp.MustCompile(`^([a-z0-9][-a-z0-9.]*)/([a-z0-9][-a-z0-9]*)(?::(\S*))? has no (local )?endpoints$`)
)

// ruleComment is the iptables rule's --comment, unquoted.
func ruleComment(rule string) string {
	m := iptCommentRE.FindStringSubmatch(rule)
	if m == nil {
		return ""
	}
	if m[1] != "" {
		return strings.ReplaceAll(m[1], `\"`, `"`)
	}
	return m[2]
}

// servicePort is a Service port as kube-proxy names it: namespace, name
// and port name ("" for an unnamed port). Local: what is missing is a
// ready endpoint on this node (traffic policy Local).
type servicePort struct {
	Namespace, Name, Port string
	Local                 bool
}

func (s servicePort) String() string {
	if s.Port == "" {
		return s.Namespace + "/" + s.Name
	}
	return s.Namespace + "/" + s.Name + ":" + s.Port
}

// noEndpointsService recognises kube-proxy's rule for a Service port with
// no ready endpoints: the iptables REJECT in KUBE-SERVICES or
// KUBE-EXTERNAL-SERVICES, or the nftables verdict map no-endpoint-services
// (the element's comment names the Service port).
func noEndpointsService(dec nfrules.Decision) (servicePort, bool) {
	var comment string
	switch {
	case dec.Source == "nft" && dec.Table == "kube-proxy" && strings.HasPrefix(dec.Map, "no-endpoint-"):
		// kube-proxy's element leads to reject-chain when the Service has
		// no endpoint at all, to drop when none is local (policy Local)
		comment = dec.Comment + " has no endpoints"
		if dec.Verdict == "DROP" {
			comment = dec.Comment + " has no local endpoints"
		}
	case dec.Source != "nft" && strings.HasPrefix(dec.Chain, "KUBE-") && (dec.Verdict == "REJECT" || dec.Verdict == "DROP"):
		comment = ruleComment(dec.Rule)
	default:
		return servicePort{}, false
	}
	m := noEndpointsRE.FindStringSubmatch(comment)
	if m == nil {
		return servicePort{}, false
	}
	return servicePort{Namespace: m[1], Name: m[2], Port: m[3], Local: m[4] != ""}, true
}
