package lab

import (
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/skbtrail/skbtrail/pkg/devprogs"
)

// The eBPF datapath faults attach what they say (tcx, cls_bpf on clsact,
// XDP), devprogs reads them back by name, and Down leaves none of the
// programs loaded.
func TestDatapathFaultsAttachAndCleanUp(t *testing.T) {
	RequirePrivileged(t)
	l := NewForTest(t, Config{})
	for _, f := range []string{"tc-drop-tcx", "redirect-peer", "tc-drop-clsact", "xdp-drop-underlay"} {
		if err := l.ApplyFault(f); err != nil {
			t.Fatalf("apply %s: %v", f, err)
		}
	}
	type where struct {
		dev    string
		hook   devprogs.Hook
		attach []string // in run order
		names  []string
	}
	checks := []where{
		{l.VXLANDevice, devprogs.Ingress, []string{devprogs.AttachTCX, devprogs.AttachTCX}, []string{TCDropProgName, RedirectPeerProg}},
		{"vethpodb", devprogs.Egress, []string{devprogs.AttachClsBPF}, []string{TCDropProgName}},
		{"eth0", devprogs.XDP, []string{devprogs.AttachXDP}, []string{XDPDropProgName}},
		{"cni0", devprogs.Ingress, nil, nil},
	}
	var ids []uint32
	for _, c := range checks {
		idx, err := l.ifindexIn(l.NodeB, c.dev)
		if err != nil {
			t.Fatal(err)
		}
		progs, err := devprogs.List(NetnsPath(l.NodeB), idx, c.hook)
		if err != nil {
			t.Fatalf("list %s %s: %v", c.dev, c.hook, err)
		}
		if len(progs) != len(c.names) {
			t.Fatalf("%s %s: programs %+v, want %v", c.dev, c.hook, progs, c.names)
		}
		for i, p := range progs {
			if p.Name != c.names[i] || p.Attach != c.attach[i] || p.ID == 0 || p.Tag == "" || p.InfoErr != "" {
				t.Errorf("%s %s #%d: %+v, want %s attached as %s", c.dev, c.hook, i, p, c.names[i], c.attach[i])
			}
			if p.Attach == devprogs.AttachClsBPF && (p.Priority != 1 || p.Handle != 1 || !p.DirectAction) {
				t.Errorf("cls_bpf filter %+v, want pref 1 handle 1 da", p)
			}
			if p.Attach == devprogs.AttachXDP && p.Mode != "native" {
				t.Errorf("xdp %+v, want native mode", p)
			}
			ids = append(ids, p.ID)
		}
	}
	if err := l.Down(); err != nil {
		t.Fatal(err)
	}
	// programs are freed once the last reference (link, filter, device)
	// is gone, which the kernel does asynchronously for a namespace
	deadline := time.Now().Add(20 * time.Second)
	for _, id := range ids {
		for {
			p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
			if errors.Is(err, os.ErrNotExist) {
				break
			}
			if err == nil {
				p.Close()
			}
			if time.Now().After(deadline) {
				t.Fatalf("program id %d still loaded after Down (%v)", id, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
}
