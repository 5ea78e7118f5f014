package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/link"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
)

var nfHooks = []link.NetfilterInetHook{
	link.NetfilterInetPreRouting,
	link.NetfilterInetLocalIn,
	link.NetfilterInetForward,
	link.NetfilterInetLocalOut,
	link.NetfilterInetPostRouting,
}

// LoadNetfilter loads the netfilter observer programs (once).
func (t *Tracer) LoadNetfilter() error {
	if t.nf != nil {
		return nil
	}
	var nf netfilterPrograms
	if err := t.loadPrograms(&nf); err != nil {
		return fmt.Errorf("load netfilter programs: %w", verifierDetail(err))
	}
	t.nf = &nf
	return nil
}

// AttachNetfilter attaches the observers to every IPv4 hook of the netns at
// path (inode ino) at the priorities of journey.NFStages. A netns already
// attached is left alone.
func (t *Tracer) AttachNetfilter(path string, ino uint32) error {
	if err := t.LoadNetfilter(); err != nil {
		return err
	}
	t.nfMu.Lock()
	defer t.nfMu.Unlock()
	if _, ok := t.nfNS[ino]; ok {
		return nil
	}
	var made []link.Link
	err := netnsutil.Do(path, func() error {
		for _, hook := range nfHooks {
			for i, prog := range t.nf.stages() {
				l, err := link.AttachNetfilter(link.NetfilterOptions{
					Program:        prog,
					ProtocolFamily: link.NetfilterProtoIPv4,
					Hook:           hook,
					Priority:       journey.NFStages[i],
				})
				if err != nil {
					return fmt.Errorf("hook %s priority %d: %w", journey.HookName(uint8(hook)), journey.NFStages[i], err)
				}
				made = append(made, l)
			}
		}
		return nil
	})
	if err != nil {
		for _, l := range made {
			_ = l.Close()
		}
		return fmt.Errorf("attach netfilter observers in %s: %w", path, err)
	}
	t.nfNS[ino] = made
	return nil
}

// DetachNetfilter removes the observers of one netns (it vanished, or is no
// longer of interest).
func (t *Tracer) DetachNetfilter(ino uint32) error {
	t.nfMu.Lock()
	ls := t.nfNS[ino]
	delete(t.nfNS, ino)
	t.nfMu.Unlock()
	var errs []error
	for _, l := range ls {
		errs = append(errs, l.Close())
	}
	return errors.Join(errs...)
}

// NetfilterNamespaces lists the netns inodes with observers attached.
func (t *Tracer) NetfilterNamespaces() []uint32 {
	t.nfMu.Lock()
	defer t.nfMu.Unlock()
	out := make([]uint32, 0, len(t.nfNS))
	for ino := range t.nfNS {
		out = append(out, ino)
	}
	return out
}
