// Package tracer loads skbtrail's kernel programs, attaches them, and reads
// their events: one reader goroutine decodes the ring buffer into a bounded
// channel and counts what did not fit.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// tracepointPrograms are the primary backend: tp_btf programs.
type tracepointPrograms struct {
	NetifReceiveSkb *ebpf.Program `ebpf:"tp_netif_receive_skb"`
	NetDevStartXmit *ebpf.Program `ebpf:"tp_net_dev_start_xmit"`
	KfreeSkb        *ebpf.Program `ebpf:"tp_kfree_skb"`
	ConsumeSkb      *ebpf.Program `ebpf:"tp_consume_skb"`
}

// deliverProgram is loaded apart from the others: a kernel without its
// tracepoint must still run the rest.
type deliverProgram struct {
	SkDataReady *ebpf.Program `ebpf:"tp_sk_data_ready"`
}

// netfilterPrograms observe each hook at the priorities of journey.NFStages.
type netfilterPrograms struct {
	Stage0 *ebpf.Program `ebpf:"nf_stage_0"`
	Stage1 *ebpf.Program `ebpf:"nf_stage_1"`
	Stage2 *ebpf.Program `ebpf:"nf_stage_2"`
	Stage3 *ebpf.Program `ebpf:"nf_stage_3"`
	Stage4 *ebpf.Program `ebpf:"nf_stage_4"`
	Stage5 *ebpf.Program `ebpf:"nf_stage_5"`
}

func (n *netfilterPrograms) stages() []*ebpf.Program {
	return []*ebpf.Program{n.Stage0, n.Stage1, n.Stage2, n.Stage3, n.Stage4, n.Stage5}
}

// Tracer owns the loaded programs, their links and the ring buffer reader.
type Tracer struct {
	spec    *ebpf.CollectionSpec
	maps    bpfMaps
	tp      tracepointPrograms
	deliver deliverProgram
	nf      *netfilterPrograms
	kp      *kprobeSet // kprobe backend, when loaded
	nfMu    sync.Mutex
	nfNS    map[uint32][]link.Link // netns inode -> netfilter links
	reader  *ringbuf.Reader

	tpMu    sync.Mutex
	tpLinks map[string]link.Link // tracepoint name -> link

	filterMu sync.Mutex
	settings Settings
	active   uint32 // bit i: filter slot i in use
	slots    [MaxFilters]Filter

	overflow  atomic.Uint64 // events that did not fit the channel
	shed      atomic.Uint64 // drop-monitor events left out while the channel was over half full
	malformed atomic.Uint64 // records that did not decode
	closeOnce sync.Once
}

// MaxFilters is the number of concurrent traces the kernel filter holds.
const MaxFilters = 8

// ErrNoFilterSlot: every filter slot is in use.
var ErrNoFilterSlot = errors.New("all filter slots are in use")

// New creates the maps with the settings in place and no filter. Programs
// load when a backend is attached (AttachTracepoints, AttachNetfilter,
// AttachKprobes), so a kernel without one backend can use another.
func New(s Settings) (*Tracer, error) {
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("remove memlock limit: %w", err)
	}
	spec, err := loadBpf()
	if err != nil {
		return nil, fmt.Errorf("load embedded BPF object: %w", err)
	}
	t := &Tracer{spec: spec, nfNS: map[uint32][]link.Link{}}
	if err := spec.LoadAndAssign(&t.maps, nil); err != nil {
		return nil, fmt.Errorf("create BPF maps: %w", err)
	}
	if err := t.SetSettings(s); err != nil {
		t.Close()
		return nil, err
	}
	r, err := ringbuf.NewReader(t.maps.Events)
	if err != nil {
		t.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	t.reader = r
	return t, nil
}

// loadPrograms loads the programs named in dst, sharing this tracer's maps.
func (t *Tracer) loadPrograms(dst any) error {
	return t.spec.LoadAndAssign(dst, &ebpf.CollectionOptions{MapReplacements: t.sharedMaps()})
}

// sharedMaps are the maps every backend's programs use, by name: each
// object declares them (observe.h) and is loaded with these in their place.
func (t *Tracer) sharedMaps() map[string]*ebpf.Map {
	return map[string]*ebpf.Map{
		bpfMapEvents:         t.maps.Events,
		bpfMapFilters:        t.maps.Filters,
		bpfMapSettingsMap:    t.maps.SettingsMap,
		bpfMapNetnsSeen:      t.maps.NetnsSeen,
		bpfMapActivityMap:    t.maps.ActivityMap,
		bpfMapFlows:          t.maps.Flows,
		bpfMapIgnoredReasons: t.maps.IgnoredReasons,
		bpfMapStats:          t.maps.Stats,
		bpfMapTracked:        t.maps.Tracked,
	}
}

func verifierDetail(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) {
		return fmt.Errorf("%w (verifier: %+v)", err, ve)
	}
	return err
}

// SetSettings replaces the settings (tunnel ports, drop monitor).
func (t *Tracer) SetSettings(s Settings) error {
	t.filterMu.Lock()
	defer t.filterMu.Unlock()
	t.settings = s
	return t.writeSettingsLocked()
}

func (t *Tracer) writeSettingsLocked() error {
	k, err := t.settings.kernel(t.active)
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	// gate on namespaces when every active filter names one
	gate := t.active != 0
	for slot := 0; slot < MaxFilters; slot++ {
		if t.active&(1<<slot) != 0 && t.slots[slot].Netns == 0 {
			gate = false
		}
	}
	if gate {
		k.GateNetns = 1
	}
	for slot := 0; slot < MaxFilters; slot++ {
		if t.active&(1<<slot) == 0 {
			continue
		}
		if t.slots[slot].Netns != 0 {
			k.AnyNetns = 1
		}
		if n := uint16(t.slots[slot].Snaplen); n > k.Snaplen {
			k.Snaplen = n
		}
	}
	if err := t.maps.SettingsMap.Put(uint32(0), &k); err != nil {
		return fmt.Errorf("write settings map: %w", err)
	}
	return nil
}

// AddFilter installs a filter in a free slot: matching packets start
// journeys from now on. It returns the slot for RemoveFilter.
func (t *Tracer) AddFilter(f Filter) (int, error) {
	k, err := f.kernel()
	if err != nil {
		return -1, fmt.Errorf("filter: %w", err)
	}
	t.filterMu.Lock()
	defer t.filterMu.Unlock()
	for slot := 0; slot < MaxFilters; slot++ {
		if t.active&(1<<slot) != 0 {
			continue
		}
		if err := t.maps.Filters.Put(uint32(slot), &k); err != nil {
			return -1, fmt.Errorf("write filter slot %d: %w", slot, err)
		}
		if f.Netns != 0 {
			if err := t.maps.NetnsSeen.Put(f.Netns, uint8(1)); err != nil {
				return -1, fmt.Errorf("mark netns %d: %w", f.Netns, err)
			}
		}
		t.slots[slot] = f
		t.active |= 1 << slot
		if err := t.writeSettingsLocked(); err != nil {
			t.active &^= 1 << slot
			return -1, err
		}
		return slot, nil
	}
	return -1, ErrNoFilterSlot
}

// RemoveFilter frees a slot returned by AddFilter.
func (t *Tracer) RemoveFilter(slot int) error {
	if slot < 0 || slot >= MaxFilters {
		return fmt.Errorf("filter slot %d out of range", slot)
	}
	t.filterMu.Lock()
	defer t.filterMu.Unlock()
	t.active &^= 1 << slot
	if err := t.writeSettingsLocked(); err != nil {
		return err
	}
	if err := t.maps.Filters.Put(uint32(slot), &bpfFilter{}); err != nil {
		return fmt.Errorf("clear filter slot %d: %w", slot, err)
	}
	if t.active == 0 {
		return t.forgetJourneysLocked()
	}
	return nil
}

// forgetJourneysLocked empties the tracked-skb and flow maps once no trace
// is active, so the programs are back to one array lookup per packet (the
// in-flight count only grows when the kernel frees an skb unseen).
func (t *Tracer) forgetJourneysLocked() error {
	var errs []error
	for _, m := range []*ebpf.Map{t.maps.Tracked, t.maps.Flows, t.maps.NetnsSeen} {
		var keys [][]byte
		var k []byte
		it := m.Iterate()
		for it.Next(&k, new([]byte)) {
			keys = append(keys, append([]byte(nil), k...))
		}
		for _, key := range keys {
			if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, err)
			}
		}
	}
	if err := t.maps.ActivityMap.Put(uint32(0), &bpfActivity{}); err != nil {
		errs = append(errs, fmt.Errorf("reset activity: %w", err))
	}
	return errors.Join(errs...)
}

// IgnoreDropReasons sets the drop reasons the drop monitor does not report.
func (t *Tracer) IgnoreDropReasons(reasons []uint32) error {
	for _, r := range reasons {
		if err := t.maps.IgnoredReasons.Put(r, uint8(1)); err != nil {
			return fmt.Errorf("ignore drop reason %d: %w", r, err)
		}
	}
	return nil
}

// AttachTracepoints loads and attaches the tp_btf programs.
func (t *Tracer) AttachTracepoints(names ...string) error {
	if t.tp.KfreeSkb == nil {
		if err := t.loadPrograms(&t.tp); err != nil {
			return fmt.Errorf("load tracepoint programs: %w", verifierDetail(err))
		}
	}
	if slices.Contains(names, TPDeliver) && t.deliver.SkDataReady == nil {
		if err := t.loadPrograms(&t.deliver); err != nil {
			return fmt.Errorf("load tp_btf/%s: %w", TPDeliver, verifierDetail(err))
		}
	}
	progs := map[string]*ebpf.Program{
		TPRx:      t.tp.NetifReceiveSkb,
		TPTx:      t.tp.NetDevStartXmit,
		TPDrop:    t.tp.KfreeSkb,
		TPConsume: t.tp.ConsumeSkb,
		TPDeliver: t.deliver.SkDataReady,
	}
	if len(names) == 0 {
		names = AllTracepoints
	}
	t.tpMu.Lock()
	defer t.tpMu.Unlock()
	if t.tpLinks == nil {
		t.tpLinks = map[string]link.Link{}
	}
	// all or nothing: a fallback backend must not attach next to half of
	// this one (its events would come twice)
	var added []string
	undo := func() {
		for _, name := range added {
			_ = t.tpLinks[name].Close()
			delete(t.tpLinks, name)
		}
	}
	for _, name := range names {
		if _, done := t.tpLinks[name]; done {
			continue
		}
		prog, ok := progs[name]
		if !ok {
			undo()
			return fmt.Errorf("no tracepoint program for %q", name)
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog, AttachType: ebpf.AttachTraceRawTp})
		if err != nil {
			undo()
			return fmt.Errorf("attach tp_btf/%s: %w", name, err)
		}
		t.tpLinks[name] = l
		added = append(added, name)
	}
	return nil
}

// DetachTracepoints detaches the named tracepoints (the programs stay
// loaded, ready to attach again).
func (t *Tracer) DetachTracepoints(names ...string) error {
	t.tpMu.Lock()
	defer t.tpMu.Unlock()
	var errs []error
	for _, name := range names {
		if l, ok := t.tpLinks[name]; ok {
			errs = append(errs, l.Close())
			delete(t.tpLinks, name)
		}
	}
	return errors.Join(errs...)
}

// Tracepoints of the primary backend.
const (
	TPRx      = "netif_receive_skb"
	TPTx      = "net_dev_start_xmit"
	TPDrop    = "kfree_skb"
	TPConsume = "consume_skb"
	// TPDeliver fires when a packet is queued to a local socket (optional:
	// older kernels lack it).
	TPDeliver = "sk_data_ready"
)

// AllTracepoints are every tracepoint of the tp_btf backend (which of them
// attach, and when, is the engine's plan: tracer.Execute).
var AllTracepoints = []string{TPRx, TPTx, TPDrop, TPConsume}

// Stats are the counters of events that never reached a journey.
type Stats struct {
	RingbufFull uint64 // the kernel could not reserve ring buffer space
	TrackedFull uint64 // the tracked-skb map refused an insert
	Overflow    uint64 // the channel to the processor was full
	Malformed   uint64 // records that did not decode
	// MonitorShed counts drop-monitor events (untracked drops) left out on
	// purpose while the ring buffer or the channel was over half full, so
	// that traced packets' events still fit: a drop storm is sampled, the
	// traces are not starved. Not part of Lost: no journey misses them.
	MonitorShed uint64
}

// Lost is the number of events that were lost on the way (an skb the
// tracked map refused is not followed: its later events never exist).
func (s Stats) Lost() uint64 { return s.RingbufFull + s.TrackedFull + s.Overflow + s.Malformed }

// Stats reads the kernel's per-CPU counters and the reader's own.
func (t *Tracer) Stats() (Stats, error) {
	s := Stats{Overflow: t.overflow.Load(), Malformed: t.malformed.Load(), MonitorShed: t.shed.Load()}
	for idx, dst := range map[uint32]*uint64{
		uint32(bpfStatIndexSTAT_RINGBUF_FULL): &s.RingbufFull,
		uint32(bpfStatIndexSTAT_TRACKED_FULL): &s.TrackedFull,
		uint32(bpfStatIndexSTAT_MONITOR_SHED): &s.MonitorShed,
	} {
		var perCPU []uint64
		if err := t.maps.Stats.Lookup(idx, &perCPU); err != nil {
			return s, fmt.Errorf("read stats map: %w", err)
		}
		for _, v := range perCPU {
			*dst += v
		}
	}
	return s, nil
}

// Run reads the ring buffer until ctx ends or the tracer closes, decoding
// into out without ever blocking the reader: what does not fit is counted.
func (t *Tracer) Run(ctx context.Context, out chan<- journey.Event) error {
	stop := context.AfterFunc(ctx, func() { t.reader.Close() })
	defer stop()
	var rec ringbuf.Record
	for {
		if err := t.reader.ReadInto(&rec); err != nil {
			if errors.Is(err, ringbuf.ErrClosed) || errors.Is(err, os.ErrClosed) {
				return nil
			}
			return fmt.Errorf("read ring buffer: %w", err)
		}
		var ev journey.Event
		if err := Decode(rec.RawSample, &ev); err != nil {
			t.malformed.Add(1)
			continue
		}
		if ev.Journey == 0 && len(out) > cap(out)/2 {
			// an untracked drop while the processor is behind: keep the
			// room for traced packets' events (the kernel does the same
			// for its ring buffer)
			t.shed.Add(1)
			continue
		}
		select {
		case out <- ev:
		default:
			t.overflow.Add(1)
		}
	}
}

// Close detaches every link and frees programs and maps.
func (t *Tracer) Close() error {
	var errs []error
	t.closeOnce.Do(func() {
		if t.reader != nil {
			errs = append(errs, t.reader.Close())
		}
		t.nfMu.Lock()
		for ino, ls := range t.nfNS {
			for _, l := range ls {
				errs = append(errs, l.Close())
			}
			delete(t.nfNS, ino)
		}
		t.nfMu.Unlock()
		t.tpMu.Lock()
		for name, l := range t.tpLinks {
			errs = append(errs, l.Close())
			delete(t.tpLinks, name)
		}
		t.tpMu.Unlock()
		if t.kp != nil {
			errs = append(errs, t.kp.close())
		}
		if t.nf != nil {
			for _, p := range t.nf.stages() {
				if p != nil {
					errs = append(errs, p.Close())
				}
			}
		}
		for _, p := range []*ebpf.Program{t.tp.NetifReceiveSkb, t.tp.NetDevStartXmit, t.tp.KfreeSkb, t.tp.ConsumeSkb, t.deliver.SkDataReady} {
			if p != nil {
				errs = append(errs, p.Close())
			}
		}
		errs = append(errs, t.maps.Close())
	})
	return errors.Join(errs...)
}
