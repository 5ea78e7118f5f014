package diagnose

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/nfrules"
)

// lastNF is the last netfilter observation of the packet before it was freed.
func lastNF(j *journey.Journey) (journey.Event, bool) {
	evs := j.Events
	for i := len(evs) - 1; i >= 0; i-- {
		switch evs[i].Kind {
		case journey.KindNF:
			return evs[i], true
		case journey.KindDrop, journey.KindConsume:
			continue
		default:
			return journey.Event{}, false
		}
	}
	return journey.Event{}, false
}

// routeGet asks the namespace's routing table (and route cache) where dst
// would go: the device, and the path MTU when the cache holds one (learned
// from an ICMP "fragmentation needed"). Zero values when it cannot tell.
func routeGet(nsPath string, dst netip.Addr) (dev string, mtu int) {
	h, err := netnsutil.NewHandle(nsPath)
	if err != nil {
		return "", 0
	}
	defer h.Close()
	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return "", 0
	}
	if l, err := h.LinkByIndex(routes[0].LinkIndex); err == nil {
		dev = l.Attrs().Name
	}
	return dev, routes[0].MTU
}

// nfDrop is a netfilter drop being explained: the event that shows the
// packet at its hook, the tuple the rules saw, the namespace's path and
// the hooks it may have been at.
type nfDrop struct {
	ev      journey.Event
	tu      journey.Tuple
	path    string
	hooks   []uint8
	guessed bool // no observer saw the packet there: hooks are suspects
}

// netfilterDecision pins a NETFILTER_DROP to its table, chain and rule.
func (d *Diagnoser) netfilterDecision(j *journey.Journey) {
	v := &j.Verdict
	if v.Reason != "NETFILTER_DROP" || (v.Kind != journey.Dropped && v.Kind != journey.Rejected) || d.cfg.Registry == nil {
		return
	}
	nd, ok := d.locateNF(j)
	if !ok {
		return
	}
	traced, exact := d.tracedDrop(j, v.NetnsInode)
	kinds := nfrules.KindAll
	if exact {
		kinds = nfrules.KindIptNFT | nfrules.KindIptNFT6 | nfrules.KindNft // for the rule's text only
	}
	// only the rules of the packet's IP version decide (fewer tools run)
	kinds = kinds.Families(!nd.tu.Dst.Is6(), nd.tu.Dst.Is6())
	after, err := nfrules.TakeKinds(context.Background(), nd.path, kinds)
	if err != nil {
		d.cfg.Logger.Warn("reading rules", zap.String("netns", v.Netns), zap.Error(err))
	}
	var dec nfrules.Decision
	var pkt nfrules.Packet
	if exact {
		dec, pkt = d.tracedDecision(&nd, v, traced, after)
	} else if dec, pkt, ok = d.ruleDecision(&nd, v, after); !ok {
		return
	}
	v.Table, v.Chain, v.Rule = dec.Table, dec.Chain, dec.Rule
	if dec.Source == "nft" {
		v.Table = dec.Family + " " + dec.Table
	}
	v.RuleHandle = uint64(dec.Handle)
	v.Attribution = attribution(dec, exact)
	f := d.explainNF(j, nd, dec, pkt, after)
	if nd.guessed {
		how := "the rules and their counters"
		if exact {
			how = "nf_tables' trace"
		}
		f.Message += fmt.Sprintf(" (hook %s found from %s: no netfilter observer was in %s yet)", v.Hook, how, v.Netns)
	}
	if dec.IsReject() && v.Kind == journey.Dropped && j.Reply == nil {
		v.Kind = journey.Rejected
	}
	j.AddFinding(f)
}

// locateNF finds where the drop happened: the last observer's hook, or
// the hooks the packet may have been at when none saw it there.
func (d *Diagnoser) locateNF(j *journey.Journey) (nfDrop, bool) {
	v := &j.Verdict
	ev, ok := lastNF(j)
	nd := nfDrop{ev: ev, hooks: []uint8{ev.Hook}}
	if !ok {
		// no observer saw it in this namespace: they join a namespace when
		// the first traced packet reaches it. The trace or the rules tell.
		if nd.ev, nd.hooks, ok = suspectHooks(j); !ok {
			return nd, false
		}
		nd.guessed = true
	}
	if nd.path, ok = d.cfg.Registry.Path(netnsutil.Inode(v.NetnsInode)); !ok {
		d.cfg.Logger.Warn("netns of the drop is gone; rules not read", zap.String("netns", v.Netns))
		return nd, false
	}
	if nd.guessed {
		// a received packet meets INPUT or FORWARD, never both: the
		// routing decision says which (rules that jump from both
		// chains to the same verdict cannot)
		if drop, ok := lastEvent(j); ok {
			dt := drop.Pkt
			if drop.Encap {
				dt = drop.Outer
			}
			if local, known := routeIsLocal(nd.path, dt.Dst); known {
				nd.hooks = routedHooks(nd.hooks, local)
			}
		}
	}
	nd.tu = nd.ev.Pkt
	if nd.ev.Encap {
		nd.tu = nd.ev.Outer // the rules saw the VXLAN packet, not what it carries
	}
	return nd, true
}

// packetAt is the packet as hook h of the namespace saw it (the out-device
// from the namespace's route, for hooks after routing).
func (nd *nfDrop) packetAt(h uint8, oif *string) nfrules.Packet {
	pkt := nfrules.Packet{Tuple: nd.tu, Iif: nd.ev.Ifname, CT: nftCTState(nd.ev)}
	if h == journey.HookForward || h == journey.HookLocalOut || h == journey.HookPostRouting {
		if *oif == "" {
			*oif, _ = routeGet(nd.path, nd.tu.Dst)
		}
		pkt.Oif = *oif
	}
	if h == journey.HookLocalOut {
		pkt.Iif = ""
	}
	return pkt
}

// tracedDecision is the decision nftrace gave, with the rule's text and
// the base chain's hook from the rules read after the drop.
func (d *Diagnoser) tracedDecision(nd *nfDrop, v *journey.Verdict, traced nfrules.TracedDrop, after *nfrules.Snapshot) (nfrules.Decision, nfrules.Packet) {
	dec, hook, hookOK := nfrules.FromTrace(traced, after)
	if hookOK {
		nd.ev.Hook = hook
		v.Hook = journey.HookName(hook)
	}
	var oif string
	pkt := nd.packetAt(nd.ev.Hook, &oif)
	// kube-proxy's verdict maps: the element that led there
	if old, ok := nfrules.Decide(d.before[v.NetnsInode], after, nd.ev.Hook, nd.ev.Stage, pkt); ok && old.Map != "" && old.Family == dec.Family && old.Table == dec.Table {
		dec.Map, dec.Comment = old.Map, old.Comment
	}
	return dec, pkt
}

// ruleDecision decides from counters (iptables) or by reading the rules
// (nft), at the first of the suspect hooks that explains the drop.
func (d *Diagnoser) ruleDecision(nd *nfDrop, v *journey.Verdict, after *nfrules.Snapshot) (nfrules.Decision, nfrules.Packet, bool) {
	var oif string
	for _, h := range nd.hooks {
		pkt := nd.packetAt(h, &oif)
		if dec, ok := nfrules.Decide(d.before[v.NetnsInode], after, h, nd.ev.Stage, pkt); ok {
			nd.ev.Hook = h
			if nd.guessed {
				v.Hook = journey.HookName(h)
			}
			return dec, pkt, true
		}
	}
	return nfrules.Decision{}, nfrules.Packet{}, false
}

// explainNF is the finding for the decision dec about the drop nd.
func (d *Diagnoser) explainNF(j *journey.Journey, nd nfDrop, dec nfrules.Decision, pkt nfrules.Packet, after *nfrules.Snapshot) journey.Finding {
	v := &j.Verdict
	tu, ev := nd.tu, nd.ev
	flow := journey.ProtoName(tu.Proto) + " " + tupleFlow(tu)
	if tu.Proto == journey.ProtoICMP || tu.Proto == journey.ProtoICMPv6 {
		flow = fmt.Sprintf("%s %s -> %s", journey.ProtoName(tu.Proto), tu.Src, tu.Dst)
	}
	if ev.Encap {
		flow = "the VXLAN packet " + flow + " carrying " + tupleFlow(ev.Pkt)
	}
	where := ""
	if pkt.Iif != "" {
		where += " from " + pkt.Iif
	}
	if pkt.Oif != "" {
		where += " to " + pkt.Oif
	}
	f := nfFinding(dec, pkt, after, *v, flow, where)
	if dec.IsPolicy() && !dec.CTInvalid() && f.Code == CodeNFPolicyDrop {
		if fl := d.flannelForwardAdvice(v, dec, pkt, after); fl != "" {
			f.Advice = fl + "; or " + f.Advice
		}
	}
	if f.Code == CodeNFRuleDrop && ev.Encap {
		if msg, advice := d.underlaySourceAdvice(j, dec, tu.Src); advice != "" {
			f.Message += msg
			f.Advice = advice
		}
	}
	return f
}

// lastEvent is the journey's last event.
func lastEvent(j *journey.Journey) (journey.Event, bool) {
	if len(j.Events) == 0 {
		return journey.Event{}, false
	}
	return j.Events[len(j.Events)-1], true
}

// routeIsLocal says whether the namespace's routing delivers dst locally
// (a route of type local: INPUT) rather than forwarding it; known is false
// when the route cannot be read.
func routeIsLocal(nsPath string, dst netip.Addr) (local, known bool) {
	if !dst.IsValid() {
		return false, false
	}
	h, err := netnsutil.NewHandle(nsPath)
	if err != nil {
		return false, false
	}
	defer h.Close()
	routes, err := h.RouteGet(dst.AsSlice())
	if err != nil || len(routes) == 0 {
		return false, false
	}
	return routes[0].Type == unix.RTN_LOCAL, true
}

// routedHooks narrows the hooks a received packet may have been at to one
// side of the routing decision: INPUT when it was for this namespace,
// FORWARD and POSTROUTING otherwise. Hooks of a sent packet (no INPUT among
// them) are returned as they are.
func routedHooks(hooks []uint8, local bool) []uint8 {
	if !slices.Contains(hooks, journey.HookLocalIn) {
		return hooks
	}
	out := make([]uint8, 0, len(hooks))
	for _, h := range hooks {
		forwarded := h == journey.HookForward || h == journey.HookPostRouting
		if local && forwarded || !local && h == journey.HookLocalIn {
			continue
		}
		out = append(out, h)
	}
	return out
}

// nftCTState is the conntrack state the event saw, as nft's "ct state"
// names it; "" when unknown.
func nftCTState(ev journey.Event) string {
	st, _ := strings.CutSuffix(ev.CTState(), "_REPLY")
	if strings.HasPrefix(st, "CTINFO_") {
		return ""
	}
	return strings.ToLower(st)
}

// suspectHooks is for a netfilter drop no observer saw: the hooks the
// packet may have been at, in path order, and the event that shows it there
// (Stage StageWholeHook). Received in the namespace: PREROUTING, INPUT,
// FORWARD, POSTROUTING; sent from it: OUTPUT, POSTROUTING.
func suspectHooks(j *journey.Journey) (journey.Event, []uint8, bool) {
	evs := j.Events
	if len(evs) == 0 || evs[len(evs)-1].Kind != journey.KindDrop {
		return journey.Event{}, nil, false
	}
	drop := evs[len(evs)-1]
	for i := len(evs) - 2; i >= 0; i-- {
		e := evs[i]
		if e.Netns != drop.Netns {
			break
		}
		if e.Kind == journey.KindNF {
			return journey.Event{}, nil, false // lastNF's case
		}
		if e.Kind == journey.KindRx {
			e.Stage = journey.StageWholeHook
			return e, []uint8{journey.HookPreRouting, journey.HookLocalIn, journey.HookForward, journey.HookPostRouting}, true
		}
	}
	drop.Stage = journey.StageWholeHook
	return drop, []uint8{journey.HookLocalOut, journey.HookPostRouting}, true
}

// nfFinding explains the netfilter decision dec for the packet pkt (flow
// and where describe it) in the namespace of the verdict v; after is the
// namespace's rules when the packet was dropped.
func nfFinding(dec nfrules.Decision, pkt nfrules.Packet, after *nfrules.Snapshot, v journey.Verdict, flow, where string) journey.Finding {
	loc := v.Table + "/" + v.Chain
	f := journey.Finding{Severity: journey.SeverityError, Netns: v.Netns}
	owner, owned := ruleOwnerOf(dec, hasDockerChains(after, dec))
	if svc, ok := noEndpointsService(dec); ok {
		return serviceNoEndpoints(svc, dec, pkt, v, flow)
	}
	switch {
	case dec.CTInvalid():
		f.Code = CodeCTInvalid
		f.Message = fmt.Sprintf("conntrack marked %s INVALID and the rule %q in %s dropped it (%s)", flow, dec.Rule, loc, v.Netns)
		f.Advice = "find why conntrack has no valid state for this flow (asymmetric routing, a missed SYN, conntrack table full: conntrack -S), or exempt the flow from the INVALID rule"
	case dec.IsPolicy():
		f.Code = CodeNFPolicyDrop
		f.Message = fmt.Sprintf("%s policy DROP dropped %s%s", loc, flow, where)
		f.Advice = policyAdvice(dec, pkt, owner, owned)
	case isRPFilterRule(dec):
		f.Code = CodeRPFilter
		f.Message = fmt.Sprintf("the reverse-path filter rule %q in %s dropped %s%s: the route back to its source does not leave through the device it came in on", dec.Rule, loc, flow, where)
		f.Advice = rpFilterRuleAdvice(dec)
	case dec.IsReject():
		f.Code = CodeNFReject
		f.Message = fmt.Sprintf("rule %q in %s rejected %s%s", dec.Rule, loc, flow, where)
		f.Advice = "remove or narrow the REJECT rule" + deleteHint(dec)
	default:
		f.Code = CodeNFRuleDrop
		f.Message = fmt.Sprintf("rule %q in %s dropped %s%s", dec.Rule, loc, flow, where)
		f.Advice = "remove or narrow the DROP rule" + deleteHint(dec)
	}
	if owned && dec.IsPolicy() {
		f.Message += " (the policy " + owner.Name + " sets)"
	}
	if owned && !dec.IsPolicy() && f.Code != CodeCTInvalid {
		f.Message += " (a rule of " + owner.Name + ")"
		f.Advice = ownedAdvice(owner, dec)
	}
	return f
}

// serviceNoEndpoints is kube-proxy's answer for a Service port without a
// ready endpoint: the fix is the endpoints, never kube-proxy's rule.
func serviceNoEndpoints(svc servicePort, dec nfrules.Decision, pkt nfrules.Packet, v journey.Verdict, flow string) journey.Finding {
	what := "rejected"
	if dec.Verdict == "DROP" {
		what = "dropped"
	}
	rule := fmt.Sprintf("rule %q in %s/%s", dec.Rule, dec.Table, dec.Chain)
	if dec.Source == "nft" {
		rule = fmt.Sprintf("verdict map %s of table %s %s (element %q)", dec.Map, dec.Family, dec.Table, dec.Comment)
	}
	t := pkt.Tuple
	f := journey.Finding{
		Code: CodeServiceNoEndpoints, Severity: journey.SeverityError, Netns: v.Netns,
		Message: fmt.Sprintf("Service %s (%s/%s) has no ready endpoints: kube-proxy's %s %s %s",
			svc, netip.AddrPortFrom(t.Dst, t.Dport), journey.ProtoName(t.Proto), rule, what, flow),
		Advice: fmt.Sprintf("give the Service a ready endpoint: kubectl get endpointslices -n %s -l kubernetes.io/service-name=%s "+
			"(none, or no addresses: the Service's selector matches no pod, compare kubectl get svc %s -n %s -o jsonpath='{.spec.selector}' with the pods' labels; "+
			"addresses with ready=false: the pods are not Ready, see their readiness probe in kubectl describe pod). "+
			"Do not delete the rule: kube-proxy writes it while the Service has no ready endpoint and replaces it by the DNAT once one is ready",
			svc.Namespace, svc.Name, svc.Name, svc.Namespace),
	}
	if svc.Local {
		f.Message = fmt.Sprintf("Service %s (%s/%s) has no ready endpoint on this node and its traffic policy is Local: kube-proxy's %s %s %s",
			svc, netip.AddrPortFrom(t.Dst, t.Dport), journey.ProtoName(t.Proto), rule, what, flow)
		f.Advice = fmt.Sprintf("with internalTrafficPolicy/externalTrafficPolicy: Local only endpoints on the receiving node serve: run a ready pod of the Service on this node "+
			"(kubectl get endpointslices -n %s -l kubernetes.io/service-name=%s shows each endpoint's nodeName and ready), send the traffic to a node that has one, "+
			"or set the policy to Cluster (kubectl get svc %s -n %s -o yaml). Do not delete the rule: kube-proxy writes it while no local endpoint is ready",
			svc.Namespace, svc.Name, svc.Name, svc.Namespace)
	}
	return f
}

func policyAdvice(dec nfrules.Decision, pkt nfrules.Packet, owner ruleOwner, owned bool) string {
	if dec.Source == "nft" {
		return fmt.Sprintf("add an accept rule before the policy in chain %s %s %s, or change its policy to accept", dec.Family, dec.Table, dec.Chain)
	}
	ipt := iptablesCommand(dec)
	var match []string
	if pkt.Iif != "" && dec.Chain != "OUTPUT" && dec.Chain != "POSTROUTING" {
		match = append(match, "-i "+pkt.Iif)
	}
	if pkt.Oif != "" && dec.Chain != "INPUT" && dec.Chain != "PREROUTING" {
		match = append(match, "-o "+pkt.Oif)
	}
	what := "this traffic"
	if len(match) == 2 {
		what = fmt.Sprintf("forwarding from %s to %s", pkt.Iif, pkt.Oif)
	}
	if len(match) == 0 {
		match = append(match, "-d "+pkt.Tuple.Dst.String())
	}
	tbl := ""
	if dec.Table != "filter" {
		tbl = " -t " + dec.Table
	}
	if owned && owner.Name == "Docker" {
		return fmt.Sprintf("allow %s in DOCKER-USER, not by changing the policy: %s sets %s/%s's policy to DROP whenever it starts (e.g. %s%s -I DOCKER-USER %s -j ACCEPT)",
			what, owner.Name, dec.Table, dec.Chain, ipt, tbl, strings.Join(match, " "))
	}
	return fmt.Sprintf("allow %s (e.g. %s%s -I %s %s -j ACCEPT)", what, ipt, tbl, dec.Chain, strings.Join(match, " "))
}

func deleteHint(dec nfrules.Decision) string {
	if dec.Source == "nft" {
		return fmt.Sprintf(" (nft delete rule %s %s %s handle %d)", dec.Family, dec.Table, dec.Chain, dec.Handle)
	}
	ipt := iptablesCommand(dec)
	tbl := ""
	if dec.Table != "filter" {
		tbl = " -t " + dec.Table
	}
	return fmt.Sprintf(" (%s%s %s)", ipt, tbl, strings.Replace(dec.Rule, "-A ", "-D ", 1))
}

// attribution says how the verdict's rule was found: "nftrace" (the
// kernel's trace named it), "counters" (a counter rose), "rules" (read
// from the rules: the first that matches the packet).
func attribution(dec nfrules.Decision, traced bool) string {
	switch {
	case traced:
		return "nftrace"
	case dec.Exact:
		return "counters"
	}
	return "rules"
}
