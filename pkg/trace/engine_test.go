package trace

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/tracer"
)

// fakeAttacher records what the backend choice attaches; each call is all
// or nothing, as the tracer's.
type fakeAttacher struct {
	tpErr, kpErr, nfErr error
	tracepoints         []string             // attached
	kprobes             [][]tracer.HookPoint // attached, one list per call
	nfLoaded            bool
}

func (f *fakeAttacher) AttachTracepoints(names ...string) error {
	if f.tpErr != nil {
		return f.tpErr
	}
	f.tracepoints = append(f.tracepoints, names...)
	return nil
}

func (f *fakeAttacher) AttachKprobes(points ...tracer.HookPoint) error {
	if f.kpErr != nil {
		return f.kpErr
	}
	f.kprobes = append(f.kprobes, points)
	return nil
}

func (f *fakeAttacher) LoadNetfilter() error {
	if f.nfErr != nil {
		return f.nfErr
	}
	f.nfLoaded = true
	return nil
}

// optimistic is what an engine assumes before attaching on a kernel whose
// kprobe probe succeeded (every kprobe symbol present).
func optimistic(netfilter bool) tracer.Features {
	f := tracer.Features{
		BTF:     tracer.Feature{Name: "btf", Available: true},
		RingBuf: tracer.Feature{Name: "ringbuf", Available: true},
		TpBTF:   tracer.Feature{Name: "tp_btf", Available: true},
		Kprobe:  tracer.Feature{Name: "kprobe", Available: true},
		Symbols: map[string]bool{},
	}
	f.NetfilterLink = tracer.Feature{Name: "netfilter_link", Available: netfilter}
	for _, s := range tracer.KprobeSymbols() {
		f.Symbols[s] = true
	}
	return f
}

// noKprobes: the kprobe probe failed (this machine), nothing is attached
// to learn it again.
func noKprobes(netfilter bool) tracer.Features {
	f := optimistic(netfilter)
	f.Kprobe, f.Symbols = tracer.Feature{Name: "kprobe", Detail: "attach failed"}, nil
	return f
}

// attachBackends executes tracer.ChooseBackends: tp_btf for the points it
// serves, kprobes for the precise netfilter verdict and tunnel points, the
// netfilter observers; a failed group turns its feature off and the plan
// is chosen again (the kprobe backend for every point where tp_btf fails,
// the observers alone for the verdict where kprobes fail).
func TestAttachBackends(t *testing.T) {
	noTp, noKp, noNf := errors.New("tp_btf: EPERM"), errors.New("kprobe: ENOTSUPP"), errors.New("netfilter: EINVAL")
	path := []string{tracer.TPRx, tracer.TPTx, tracer.TPConsume}
	precise := []tracer.HookPoint{tracer.HookNFVerdict, tracer.HookTunnel}
	for _, c := range []struct {
		name     string
		k        fakeAttacher
		feat     tracer.Features
		onDemand bool

		tracepoints     []string
		kprobes         [][]tracer.HookPoint
		backends        []string
		pathTracepoints []string
		deliver         bool
		nf              bool
		kprobeOK        bool
	}{
		{name: "everything", feat: optimistic(true),
			tracepoints: tracer.AllTracepoints, kprobes: [][]tracer.HookPoint{precise},
			backends: []string{"tp_btf", "kprobe", "netfilter_link"}, deliver: true, nf: true, kprobeOK: true},
		{name: "on demand", feat: optimistic(true), onDemand: true,
			tracepoints: []string{tracer.TPDrop}, kprobes: [][]tracer.HookPoint{precise},
			backends: []string{"tp_btf", "kprobe", "netfilter_link"}, pathTracepoints: path, nf: true, kprobeOK: true},
		{name: "this machine", feat: noKprobes(true),
			tracepoints: tracer.AllTracepoints, backends: []string{"tp_btf", "netfilter_link"}, deliver: true, nf: true},
		{name: "this machine on demand", feat: noKprobes(true), onDemand: true,
			tracepoints: []string{tracer.TPDrop}, backends: []string{"tp_btf", "netfilter_link"}, pathTracepoints: path, nf: true},
		{name: "kprobes fail to attach", k: fakeAttacher{kpErr: noKp}, feat: optimistic(false),
			tracepoints: tracer.AllTracepoints, backends: []string{"tp_btf"}, deliver: true},
		{name: "kprobes fail, observers take the verdict", k: fakeAttacher{kpErr: noKp}, feat: optimistic(true),
			tracepoints: tracer.AllTracepoints, backends: []string{"tp_btf", "netfilter_link"}, deliver: true, nf: true},
		{name: "kprobe fallback", k: fakeAttacher{tpErr: noTp}, feat: optimistic(false),
			kprobes: [][]tracer.HookPoint{tracer.HookPoints}, backends: []string{"kprobe"}, kprobeOK: true},
		{name: "kprobe fallback on demand", k: fakeAttacher{tpErr: noTp}, feat: optimistic(true), onDemand: true,
			kprobes: [][]tracer.HookPoint{tracer.HookPoints}, backends: []string{"kprobe", "netfilter_link"}, nf: true, kprobeOK: true},
		{name: "no netfilter link", k: fakeAttacher{nfErr: noNf}, feat: optimistic(true),
			tracepoints: tracer.AllTracepoints, kprobes: [][]tracer.HookPoint{precise}, backends: []string{"tp_btf", "kprobe"}, deliver: true, kprobeOK: true},
		{name: "no netfilter link, no kprobes", k: fakeAttacher{nfErr: noNf}, feat: noKprobes(true),
			tracepoints: tracer.AllTracepoints, backends: []string{"tp_btf"}, deliver: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := c.k
			p, err := attachBackends(&k, c.feat, c.onDemand, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(k.tracepoints, c.tracepoints) {
				t.Errorf("tracepoints %v, want %v", k.tracepoints, c.tracepoints)
			}
			if !slices.EqualFunc(k.kprobes, c.kprobes, slices.Equal) {
				t.Errorf("kprobes %v, want %v", k.kprobes, c.kprobes)
			}
			if !slices.Equal(p.backends, c.backends) || !slices.Equal(p.pathTracepoints, c.pathTracepoints) || p.deliver != c.deliver || p.netfilter != c.nf || k.nfLoaded != c.nf {
				t.Errorf("plan %+v (netfilter loaded %v), want backends %v, path tracepoints %v, deliver %v, netfilter %v",
					p, k.nfLoaded, c.backends, c.pathTracepoints, c.deliver, c.nf)
			}
			if got := p.feat.TpBTF.Available; got != (c.k.tpErr == nil) {
				t.Errorf("tp_btf available %v", got)
			}
			if got := p.feat.Kprobe.Available; got != c.kprobeOK {
				t.Errorf("kprobe available %v, want %v", got, c.kprobeOK)
			}
			// the learned features give the same choice as what was attached
			x := tracer.Execute(tracer.ChooseBackends(p.feat))
			if x.Netfilter != p.netfilter || (len(x.Kprobes) > 0) != slices.Contains(p.backends, "kprobe") {
				t.Errorf("learned features choose %+v, attached %v", x, p.backends)
			}
		})
	}
}

// Neither tp_btf nor kprobes: an environment error naming both causes.
func TestAttachBackendsNone(t *testing.T) {
	k := fakeAttacher{tpErr: errors.New("tp_btf: EPERM"), kpErr: errors.New("kprobe: ENOTSUPP")}
	_, err := attachBackends(&k, optimistic(true), false, zap.NewNop())
	if !errors.Is(err, ErrEnvironment) || !strings.Contains(err.Error(), "EPERM") || !strings.Contains(err.Error(), "ENOTSUPP") {
		t.Fatalf("error %v, want ErrEnvironment with both causes", err)
	}
	if len(k.tracepoints) != 0 || len(k.kprobes) != 0 || k.nfLoaded {
		t.Errorf("attached %v %v (netfilter %v) although the engine fails", k.tracepoints, k.kprobes, k.nfLoaded)
	}
}
