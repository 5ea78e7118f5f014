package tracer

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

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

// nfFamilies are the protocol families observed: IPv4 and IPv6 hooks take
// the same stages (ip6tables' tables sit at the same priorities).
var nfFamilies = []link.NetfilterProtocolFamily{link.NetfilterProtoIPv4, link.NetfilterProtoIPv6}

// AttachNetfilter attaches the observers to every IPv4 and IPv6 hook of the
// netns at path (inode ino) at the priorities of journey.NFStages. A netns already
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
		stages := t.nf.stages()
		for _, family := range nfFamilies {
			for _, hook := range nfHooks {
				for _, i := range journey.HookStages[uint8(hook)] {
					l, err := attachStage(stages[i], family, hook, int(i))
					if err != nil {
						return err
					}
					made = append(made, l)
				}
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

// stageSlack is how far an observer may move from its stage priority when
// another hook (another skbtrail, say) holds that priority: stages sit at
// least 10 away from every iptables table, so the order stays the same.
const stageSlack = 8

// attachStage attaches stage i's program to the family's hook at the
// stage's priority, or at the next free one moving away from the table it
// guards.
func attachStage(prog *ebpf.Program, family link.NetfilterProtocolFamily, hook link.NetfilterInetHook, i int) (link.Link, error) {
	prio := journey.NFStages[i]
	dir := int32(-1) // stages before a table move earlier
	if i == 2 || i == 3 || i == 5 {
		dir = 1 // stages after a table move later
	}
	var err error
	for k := int32(0); k <= stageSlack; k++ {
		var l link.Link
		l, err = link.AttachNetfilter(link.NetfilterOptions{
			Program:        prog,
			ProtocolFamily: family,
			Hook:           hook,
			Priority:       prio + dir*k,
		})
		if err == nil {
			return l, nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
	}
	return nil, fmt.Errorf("%s hook %s priority %d: %w", familyName(family), journey.HookName(uint8(hook)), prio, err)
}

func familyName(f link.NetfilterProtocolFamily) string {
	if f == link.NetfilterProtoIPv6 {
		return "ipv6"
	}
	return "ipv4"
}
