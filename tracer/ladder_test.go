package tracer

import (
	"reflect"
	"slices"
	"strings"
	"testing"
)

func featOK(d string) Feature      { return Feature{Available: true, Detail: d} }
func featMissing(d string) Feature { return Feature{Detail: d} }

func kallsymsWithout(missing ...string) map[string]bool {
	m := map[string]bool{}
	for _, s := range KprobeSymbols() {
		m[s] = !slices.Contains(missing, s)
	}
	return m
}

// thisMachine: Linux 6.18 without CONFIG_KPROBES, fentry refused.
func thisMachine() Features {
	return Features{
		BTF: featOK(""), TpBTF: featOK(""), RingBuf: featOK(""), NetfilterLink: featOK(""), TCX: featOK(""),
		Kprobe:   featMissing("program loads; attach failed: ... (kernel built without CONFIG_KPROBES?)"),
		Fentry:   featMissing("load refused: operation not permitted (EPERM)"),
		Lockdown: Feature{Available: true, Value: "unknown"},
		Symbols:  kallsymsWithout("kfree_skb_reason"),
	}
}

// distroKernel: a distribution kernel with everything.
func distroKernel() Features {
	f := thisMachine()
	f.Kprobe, f.Fentry, f.KprobeMulti = featOK(""), featOK(""), featOK("")
	return f
}

func backendOf(t *testing.T, bs []Backend, p HookPoint) Backend {
	t.Helper()
	for _, b := range bs {
		if b.Point == p {
			return b
		}
	}
	t.Fatalf("no backend for %s in %+v", p, bs)
	return Backend{}
}

func TestChooseBackendsThisMachine(t *testing.T) {
	bs := ChooseBackends(thisMachine())
	if len(bs) != len(HookPoints) {
		t.Fatalf("got %d backends, want one per hook point (%d)", len(bs), len(HookPoints))
	}
	want := map[HookPoint]struct {
		mech   Mechanism
		attach string
	}{
		HookDrop:      {MechTpBTF, "tp_btf/kfree_skb"},
		HookTx:        {MechTpBTF, "tp_btf/net_dev_start_xmit"},
		HookRx:        {MechTpBTF, "tp_btf/netif_receive_skb"},
		HookConsume:   {MechTpBTF, "tp_btf/consume_skb"},
		HookNFVerdict: {MechNetfilter, "netfilter/ipv4"},
		HookTunnel:    {MechTpBTF, "tp_btf/net_dev_start_xmit"},
	}
	for i, b := range bs {
		if b.Point != HookPoints[i] {
			t.Errorf("backend %d is for %s, want %s (report order)", i, b.Point, HookPoints[i])
		}
		w := want[b.Point]
		if b.Mechanism != w.mech || len(b.Attach) == 0 || !strings.HasPrefix(b.Attach[0], w.attach) {
			t.Errorf("%s: got %s %v, want %s %s...", b.Point, b.Mechanism, b.Attach, w.mech, w.attach)
		}
	}
	deg := thisMachine().Degraded()
	wantDeg := []string{
		"nf_hook_slow kprobe unavailable: the dropping hook is the last netfilter observer",
		"vxlan_xmit kprobe unavailable: outer source taken from the tx tracepoint on the underlay device",
	}
	if len(deg) != len(wantDeg) {
		t.Fatalf("Degraded() = %q, want %d lines", deg, len(wantDeg))
	}
	for i, w := range wantDeg {
		if !strings.HasPrefix(deg[i], w) {
			t.Errorf("Degraded()[%d] = %q, want prefix %q", i, deg[i], w)
		}
	}
}

func TestChooseBackendsDistroKernel(t *testing.T) {
	f := distroKernel()
	bs := ChooseBackends(f)
	nf := backendOf(t, bs, HookNFVerdict)
	// the observers stay for each stage's NAT and conntrack state
	if want := []string{"kprobe/nf_hook_slow", "kretprobe/nf_hook_slow", "kprobe/sk_skb_reason_drop", netfilterAttach + "ipv4 observers (NAT and conntrack per stage): " + nfStagesText()}; nf.Mechanism != MechKprobe || !reflect.DeepEqual(nf.Attach, want) {
		t.Errorf("nf-verdict: %s %v, want kprobe %v", nf.Mechanism, nf.Attach, want)
	}
	tun := backendOf(t, bs, HookTunnel)
	if want := []string{"kprobe/vxlan_xmit", "kprobe/ip_tunnel_xmit"}; tun.Mechanism != MechKprobe || !reflect.DeepEqual(tun.Attach, want) {
		t.Errorf("tunnel: %s %v, want kprobe %v", tun.Mechanism, tun.Attach, want)
	}
	for _, p := range []HookPoint{HookDrop, HookTx, HookRx, HookConsume} {
		if b := backendOf(t, bs, p); b.Mechanism != MechTpBTF {
			t.Errorf("%s: %s, want tp_btf (tracepoints are preferred where they see as much)", p, b.Mechanism)
		}
	}
	if d := f.Degraded(); len(d) != 0 {
		t.Errorf("Degraded() = %q, want nothing", d)
	}
	if got, want := Points(bs, MechKprobe), DefaultKprobePoints; !reflect.DeepEqual(got, want) {
		t.Errorf("kprobe points = %v, want %v", got, want)
	}

	// before 6.11 the free with a reason is kfree_skb_reason
	f.Symbols = kallsymsWithout("sk_skb_reason_drop")
	if nf := backendOf(t, ChooseBackends(f), HookNFVerdict); nf.Attach[2] != "kprobe/kfree_skb_reason" {
		t.Errorf("nf-verdict on an older kernel attaches %v, want kprobe/kfree_skb_reason", nf.Attach)
	}

	// vxlan module not loaded
	f.Symbols = kallsymsWithout("kfree_skb_reason", "vxlan_xmit")
	tun = backendOf(t, ChooseBackends(f), HookTunnel)
	if tun.Mechanism != MechKprobe || !reflect.DeepEqual(tun.Attach, []string{"kprobe/ip_tunnel_xmit"}) || !strings.Contains(tun.Degraded, "vxlan") {
		t.Errorf("tunnel without vxlan module: %+v", tun)
	}
}

func TestChooseBackendsKprobeOnly(t *testing.T) {
	f := distroKernel()
	f.TpBTF = featMissing("attach failed")
	f.Symbols = kallsymsWithout("sk_skb_reason_drop")
	bs := ChooseBackends(f)
	want := map[HookPoint][]string{
		HookDrop:      {"kprobe/kfree_skb_reason"},
		HookTx:        {"kprobe/dev_hard_start_xmit"},
		HookRx:        {"kprobe/__netif_receive_skb_one_core", "kprobe/__netif_receive_skb_list_core"},
		HookConsume:   {"kprobe/consume_skb", "kprobe/kfree_skb_reason"},
		HookNFVerdict: {"kprobe/nf_hook_slow", "kretprobe/nf_hook_slow", "kprobe/kfree_skb_reason", netfilterAttach + "ipv4 observers (NAT and conntrack per stage): " + nfStagesText()},
		HookTunnel:    {"kprobe/vxlan_xmit", "kprobe/ip_tunnel_xmit"},
	}
	for _, b := range bs {
		if b.Mechanism != MechKprobe || !reflect.DeepEqual(b.Attach, want[b.Point]) {
			t.Errorf("%s: %s %v, want kprobe %v", b.Point, b.Mechanism, b.Attach, want[b.Point])
		}
	}
	if got := Points(bs, MechKprobe); !reflect.DeepEqual(got, HookPoints) {
		t.Errorf("kprobe points = %v, want all", got)
	}
	deg := f.Degraded()
	if len(deg) != 4 {
		t.Fatalf("Degraded() = %q, want one line per point taken from kprobes instead of tp_btf", deg)
	}
	for _, d := range deg {
		if !strings.HasPrefix(d, "tp_btf unavailable: ") {
			t.Errorf("unexpected degraded line %q", d)
		}
	}

	// the receive list function inlined: some receives are lost, say so
	f.Symbols = kallsymsWithout("sk_skb_reason_drop", "__netif_receive_skb_list_core")
	rx := backendOf(t, ChooseBackends(f), HookRx)
	if !reflect.DeepEqual(rx.Attach, []string{"kprobe/__netif_receive_skb_one_core"}) || !strings.Contains(rx.Degraded, "__netif_receive_skb_list_core not in this kernel") {
		t.Errorf("rx with one function missing: %+v", rx)
	}
}

func TestChooseBackendsNothingForNetfilter(t *testing.T) {
	f := thisMachine()
	f.NetfilterLink = featMissing("link failed")
	nf := backendOf(t, ChooseBackends(f), HookNFVerdict)
	if nf.Mechanism != MechNone || !strings.Contains(nf.Degraded, "without its hook") {
		t.Errorf("nf-verdict with neither kprobes nor netfilter links: %+v", nf)
	}
}

func TestChooseBackendsBlocked(t *testing.T) {
	for name, f := range map[string]Features{
		"no BTF":          func() Features { f := distroKernel(); f.BTF = featMissing(""); return f }(),
		"no ring buffer":  func() Features { f := distroKernel(); f.RingBuf = featMissing(""); return f }(),
		"confidentiality": func() Features { f := distroKernel(); f.Lockdown = Feature{Value: "confidentiality"}; return f }(),
		"nothing probed":  {},
	} {
		for _, b := range ChooseBackends(f) {
			if b.Mechanism != MechNone || b.Degraded == "" {
				t.Errorf("%s: %s gets %s (%q), want none with a reason", name, b.Point, b.Mechanism, b.Degraded)
			}
		}
		if d := f.Degraded(); len(d) != 1 || !strings.HasPrefix(d[0], "skbtrail cannot trace: ") {
			t.Errorf("%s: Degraded() = %q, want one line saying skbtrail cannot trace", name, d)
		}
	}
}

func TestChooseBackendsIsPure(t *testing.T) {
	f := distroKernel()
	a, b := ChooseBackends(f), ChooseBackends(f)
	if !reflect.DeepEqual(a, b) {
		t.Errorf("two calls disagree:\n%+v\n%+v", a, b)
	}
	if !reflect.DeepEqual(f, distroKernel()) {
		t.Error("ChooseBackends changed its argument")
	}
}

func TestKprobePlan(t *testing.T) {
	sites := func(plan []kprobeSite) []string {
		var out []string
		for _, s := range plan {
			out = append(out, s.String())
		}
		return out
	}
	plan, err := kprobePlan(DefaultKprobePoints, kallsymsWithout("kfree_skb_reason"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kprobe/sk_skb_reason_drop", "kprobe/nf_hook_slow", "kretprobe/nf_hook_slow", "kprobe/vxlan_xmit", "kprobe/ip_tunnel_xmit"}
	if !reflect.DeepEqual(sites(plan), want) {
		t.Errorf("default plan = %v, want %v", sites(plan), want)
	}

	plan, err = kprobePlan(HookPoints, kallsymsWithout("sk_skb_reason_drop", "vxlan_xmit", "ip_tunnel_xmit"))
	if err != nil {
		t.Fatal(err)
	}
	want = []string{"kprobe/kfree_skb_reason", "kprobe/consume_skb", "kprobe/dev_hard_start_xmit",
		"kprobe/__netif_receive_skb_one_core", "kprobe/__netif_receive_skb_list_core",
		"kprobe/nf_hook_slow", "kretprobe/nf_hook_slow"}
	if !reflect.DeepEqual(sites(plan), want) {
		t.Errorf("full plan without tunnel modules = %v, want %v", sites(plan), want)
	}

	if _, err := kprobePlan([]HookPoint{HookNFVerdict}, kallsymsWithout("nf_hook_slow")); err == nil || !strings.Contains(err.Error(), "nf_hook_slow") {
		t.Errorf("plan without nf_hook_slow: err = %v, want one naming nf_hook_slow", err)
	}

	// every program of the plan exists in the object
	spec, err := loadKprobe()
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range kprobeGroups {
		for _, s := range g.sites {
			p := spec.Programs[s.prog]
			if p == nil {
				t.Errorf("program %s of %s is not in kprobe.c", s.prog, s)
				continue
			}
			if want := s.String(); p.SectionName != want {
				t.Errorf("program %s is in section %s, attached as %s", s.prog, p.SectionName, want)
			}
		}
	}
	if n := len(new(kprobeSetPrograms).byName()); n != len(spec.Programs) {
		t.Errorf("kprobe.c has %d programs, kprobeSetPrograms knows %d", len(spec.Programs), n)
	}
}

// Execute groups the choice into the tracer's attach calls.
func TestExecute(t *testing.T) {
	kprobeOnly := distroKernel()
	kprobeOnly.TpBTF = featMissing("EPERM")
	noNf := thisMachine()
	noNf.NetfilterLink = featMissing("EINVAL")
	for _, c := range []struct {
		name string
		f    Features
		want Execution
	}{
		{"this machine", thisMachine(), Execution{Tracepoints: AllTracepoints, Netfilter: true}},
		{"distro kernel", distroKernel(), Execution{Tracepoints: AllTracepoints, Kprobes: []HookPoint{HookNFVerdict, HookTunnel}, Netfilter: true}},
		{"kprobes only", kprobeOnly, Execution{Kprobes: HookPoints, Netfilter: true}},
		{"no netfilter link", noNf, Execution{Tracepoints: AllTracepoints}},
		{"blocked", Features{}, Execution{}},
	} {
		if got := Execute(ChooseBackends(c.f)); !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %+v, want %+v", c.name, got, c.want)
		}
	}
}
