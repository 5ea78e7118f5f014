package diagnose

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/resolvconf"
)

// dnsPort is the port DNS servers listen on.
const dnsPort = 53

// dns looks at a DNS query (to port 53): when the source pod's resolv.conf
// does not name the cluster DNS Service, DNS_CONFIG says so; a query to the
// cluster DNS Service gets DNS_SERVICE naming the Service and its
// endpoints, as kube-proxy's rules program them.
func (d *Diagnoser) dns(j *journey.Journey) {
	p := j.Packet
	if p.Dport != dnsPort || (p.Proto != "udp" && p.Proto != "tcp") || len(j.Events) == 0 {
		return
	}
	svc, ok := d.clusterDNS(j, p.Proto)
	if !ok {
		return // no kube-proxy rules here name a cluster DNS
	}
	dst, _ := netip.ParseAddr(p.Dst)
	src := j.Events[0]
	if d.resolvConf != nil {
		if conf, pid, ok := d.resolvConf(src.Netns); ok && !slices.Contains(conf.Nameservers, svc.IP) {
			d.add(j, journey.Finding{Code: CodeDNSConfig, Severity: journey.SeverityWarning, Netns: j.NetnsName(src.Netns),
				Message: fmt.Sprintf("the resolv.conf of %s (read through pid %d) names nameserver %s, not the cluster DNS Service %s (%s): the pod's DNS queries bypass the cluster DNS, so Service and pod names do not resolve%s",
					j.NetnsName(src.Netns), pid, addrsText(conf.Nameservers), svc.Name, svc.IP, queryText(dst, conf)),
				Advice: fmt.Sprintf("set the pod's dnsPolicy to ClusterFirst (ClusterFirstWithHostNet for a hostNetwork pod) and drop any dnsConfig.nameservers override; "+
					"if every pod shows this, check kubelet's clusterDNS (--cluster-dns) is %s", svc.IP)})
		}
	}
	if dst != svc.IP {
		return
	}
	eps := "none"
	if len(svc.Endpoints) > 0 {
		eps = strings.Join(svc.Endpoints, ", ")
	}
	msg := fmt.Sprintf("a query to the cluster DNS Service %s (%s:%d/%s); its endpoints on this node's kube-proxy rules: %s", svc.Name, svc.IP, svc.Port, svc.Proto, eps)
	ns := j.Verdict.Netns
	for _, r := range j.Rewrites {
		if r.Kind == "DNAT" && r.Before.Dst == p.Dst {
			msg += fmt.Sprintf("; this query went to %s:%d", r.After.Dst, r.After.Dport)
			ns = r.Netns
			break
		}
	}
	d.add(j, journey.Finding{Code: CodeDNSService, Severity: journey.SeverityInfo, Netns: ns, Message: msg,
		Advice: "kubectl -n kube-system get pods -l k8s-app=kube-dns -o wide names the pods behind these endpoints; their logs tell what they did with the query"})
}

func addrsText(as []netip.Addr) string {
	if len(as) == 0 {
		return "(none)"
	}
	var s []string
	for _, a := range as {
		s = append(s, a.String())
	}
	return strings.Join(s, ", ")
}

func queryText(dst netip.Addr, conf resolvconf.Config) string {
	if slices.Contains(conf.Nameservers, dst) {
		return fmt.Sprintf("; this query went to %s", dst)
	}
	return ""
}
