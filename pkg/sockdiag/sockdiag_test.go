package sockdiag

import (
	"encoding/binary"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// inetDiagMsg builds an inet_diag_msg as the kernel sends it, with an
// INET_DIAG_SKMEMINFO attribute.
func inetDiagMsg(fam uint8, addr netip.Addr, port uint16, rq, wq, inode uint32, mem []uint32) []byte {
	m := make([]byte, inetDiagMsgLen)
	m[0] = fam
	binary.BigEndian.PutUint16(m[4:], port)
	copy(m[8:], addr.AsSlice())
	binary.NativeEndian.PutUint32(m[56:], rq)
	binary.NativeEndian.PutUint32(m[60:], wq)
	binary.NativeEndian.PutUint32(m[64:], 1000)
	binary.NativeEndian.PutUint32(m[68:], inode)
	attr := make([]byte, 4+4*len(mem))
	binary.NativeEndian.PutUint16(attr[0:], uint16(len(attr)))
	binary.NativeEndian.PutUint16(attr[2:], inetDiagSKMemInf)
	for i, v := range mem {
		binary.NativeEndian.PutUint32(attr[4+4*i:], v)
	}
	return append(m, attr...)
}

func TestParse(t *testing.T) {
	mem := []uint32{2304, 2304, 0, 212992, 0, 0, 0, 512, 7}
	s, ok := parse(inetDiagMsg(unix.AF_INET, netip.MustParseAddr("10.244.1.2"), 53, 2304, 0, 4242, mem), unix.IPPROTO_UDP)
	want := Socket{Proto: "udp", Local: netip.MustParseAddrPort("10.244.1.2:53"), RQueue: 2304, Inode: 4242, UID: 1000,
		RmemAlloc: 2304, RcvBuf: 2304, Backlog: 512, Drops: 7}
	if !ok || s != want {
		t.Errorf("udp: %+v %v, want %+v", s, ok, want)
	}
	s, ok = parse(inetDiagMsg(unix.AF_INET6, netip.MustParseAddr("::"), 80, 129, 128, 1, nil), unix.IPPROTO_TCP)
	if !ok || s.Proto != "tcp" || s.Local != netip.MustParseAddrPort("[::]:80") || !s.AcceptQueueFull() || s.RcvBuf != 0 {
		t.Errorf("tcp6: %+v %v", s, ok)
	}
	if !s.Accepts(netip.MustParseAddr("10.244.1.2")) {
		t.Error("[::]:80 must take IPv4 (unless v6only)")
	}
	if _, ok := parse(make([]byte, 10), unix.IPPROTO_TCP); ok {
		t.Error("short message parsed")
	}
}

func TestFindProcess(t *testing.T) {
	root := t.TempDir()
	mk := func(pid, comm string, links ...string) {
		fd := filepath.Join(root, pid, "fd")
		if err := os.MkdirAll(fd, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(root, pid, "comm"), []byte(comm+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		for i, l := range links {
			if err := os.Symlink(l, filepath.Join(fd, string(rune('3'+i)))); err != nil {
				t.Fatal(err)
			}
		}
	}
	mk("12", "nginx", "/dev/null", "socket:[555]")
	mk("77", "coredns", "pipe:[9]", "socket:[4242]")
	if err := os.MkdirAll(filepath.Join(root, "self"), 0o755); err != nil {
		t.Fatal(err)
	}
	p, ok := FindProcess(root, 4242)
	if !ok || p.PID != 77 || p.Comm != "coredns" || p.String() != "coredns (pid 77)" {
		t.Errorf("FindProcess = %+v %v", p, ok)
	}
	if _, ok := FindProcess(root, 1); ok {
		t.Error("found a process for an unknown socket")
	}
	if _, ok := FindProcess(filepath.Join(root, "missing"), 4242); ok {
		t.Error("found a process without /proc")
	}
}
