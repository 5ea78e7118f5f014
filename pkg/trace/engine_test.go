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

// The backend choice: tp_btf first, the kprobe backend for every point
// where tp_btf fails (and then nothing is attached per session), the
// optional kprobe points and netfilter observers where the kernel allows.
func TestAttachBackends(t *testing.T) {
	noTp, noKp, noNf := errors.New("tp_btf: EPERM"), errors.New("kprobe: ENOTSUPP"), errors.New("netfilter: EINVAL")
	for _, c := range []struct {
		name                string
		k                   fakeAttacher
		onDemand, netfilter bool

		tracepoints  []string
		kprobes      [][]tracer.HookPoint
		backends     []string
		pathOnDemand bool
		deliver      bool
		nf           bool
	}{
		{name: "everything", netfilter: true,
			tracepoints: tracer.AllTracepoints, kprobes: [][]tracer.HookPoint{nil},
			backends: []string{"tp_btf", "kprobe", "netfilter_link"}, deliver: true, nf: true},
		{name: "on demand", onDemand: true, netfilter: true,
			tracepoints: []string{tracer.TPDrop}, kprobes: [][]tracer.HookPoint{nil},
			backends: []string{"tp_btf", "kprobe", "netfilter_link"}, pathOnDemand: true, nf: true},
		{name: "no kprobes", k: fakeAttacher{kpErr: noKp},
			tracepoints: tracer.AllTracepoints, backends: []string{"tp_btf"}, deliver: true},
		{name: "kprobe fallback", k: fakeAttacher{tpErr: noTp},
			kprobes: [][]tracer.HookPoint{tracer.HookPoints}, backends: []string{"kprobe"}},
		{name: "kprobe fallback on demand", k: fakeAttacher{tpErr: noTp}, onDemand: true,
			kprobes: [][]tracer.HookPoint{tracer.HookPoints}, backends: []string{"kprobe"}},
		{name: "no netfilter link", k: fakeAttacher{nfErr: noNf}, netfilter: true,
			tracepoints: tracer.AllTracepoints, kprobes: [][]tracer.HookPoint{nil}, backends: []string{"tp_btf", "kprobe"}, deliver: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			k := c.k
			p, err := attachBackends(&k, c.onDemand, c.netfilter, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(k.tracepoints, c.tracepoints) {
				t.Errorf("tracepoints %v, want %v", k.tracepoints, c.tracepoints)
			}
			if !slices.EqualFunc(k.kprobes, c.kprobes, slices.Equal) {
				t.Errorf("kprobes %v, want %v", k.kprobes, c.kprobes)
			}
			if !slices.Equal(p.backends, c.backends) || p.pathOnDemand != c.pathOnDemand || p.deliver != c.deliver || p.netfilter != c.nf || k.nfLoaded != c.nf {
				t.Errorf("plan %+v (netfilter loaded %v), want backends %v, path on demand %v, deliver %v, netfilter %v",
					p, k.nfLoaded, c.backends, c.pathOnDemand, c.deliver, c.nf)
			}
			if got := p.feat.TpBTF.Available; got != (c.k.tpErr == nil) {
				t.Errorf("tp_btf available %v", got)
			}
			if got := p.feat.Kprobe.Available; got != (c.k.kpErr == nil) {
				t.Errorf("kprobe available %v", got)
			}
		})
	}
}

// Neither tp_btf nor kprobes: an environment error naming both causes.
func TestAttachBackendsNone(t *testing.T) {
	k := fakeAttacher{tpErr: errors.New("tp_btf: EPERM"), kpErr: errors.New("kprobe: ENOTSUPP")}
	_, err := attachBackends(&k, false, true, zap.NewNop())
	if !errors.Is(err, ErrEnvironment) || !strings.Contains(err.Error(), "EPERM") || !strings.Contains(err.Error(), "ENOTSUPP") {
		t.Fatalf("error %v, want ErrEnvironment with both causes", err)
	}
	if len(k.tracepoints) != 0 || len(k.kprobes) != 0 || k.nfLoaded {
		t.Errorf("attached %v %v (netfilter %v) although the engine fails", k.tracepoints, k.kprobes, k.nfLoaded)
	}
}
