//go:build linux

package netnsutil

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/tests/fuzztest"
)

// fakeRoot makes a proc and a netns directory in a temp dir whose
// namespace files are links to this process's own network namespace:
// pids 1 and 77, the bind-mount "self", and "plain", a file that is no
// namespace. Resolving names against them opens nothing else.
func fakeRoot(tb testing.TB) (resolver, Inode) {
	tb.Helper()
	dir := tb.TempDir()
	rv := resolver{procDir: filepath.Join(dir, "proc"), netnsDir: filepath.Join(dir, "netns")}
	for _, p := range []string{filepath.Join(rv.procDir, "1", "ns"), filepath.Join(rv.procDir, "77", "ns"), rv.netnsDir} {
		if err := os.MkdirAll(p, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	for _, p := range []string{procNetPath(rv.procDir, 1), procNetPath(rv.procDir, 77), filepath.Join(rv.netnsDir, "self")} {
		if err := os.Symlink("/proc/self/ns/net", p); err != nil {
			tb.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(rv.netnsDir, "plain"), nil, 0o644); err != nil {
		tb.Fatal(err)
	}
	self, err := InodeOf("/proc/self/ns/net")
	if err != nil {
		tb.Fatal(err)
	}
	return rv, self
}

func TestResolveFakeRoot(t *testing.T) {
	rv, self := fakeRoot(t)
	for _, name := range []string{"host", "pid:1", "pid:77", "self", inoName(self)} {
		if _, ino, err := rv.resolve(name); err != nil || ino != self {
			t.Errorf("resolve(%q) = %d, %v; want %d", name, ino, err, self)
		}
	}
	for _, name := range []string{"pid:2", "other", "ino:1"} {
		if _, _, err := rv.resolve(name); !errors.Is(err, ErrNotFound) {
			t.Errorf("resolve(%q): %v, want ErrNotFound", name, err)
		}
	}
	if _, _, err := rv.resolve("plain"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("resolve(plain): %v, want not a namespace", err)
	}
	// "ino:N" is namespace N, also when another one is bind-mounted so
	if err := os.Symlink("/proc/self/ns/net", filepath.Join(rv.netnsDir, "ino:1")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := rv.resolve("ino:1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("resolve(ino:1) with namespace %d bind-mounted as ino:1: %v, want ErrNotFound", self, err)
	}
	if strings.Contains(rv.registry().Name(self), "ino:1") {
		t.Errorf("namespace %d named %q", self, rv.registry().Name(self))
	}
}

// FuzzResolveName: any name resolves, against the fake proc and netns
// directories of fakeRoot (so the target opens, stats and lists only
// inside them, and creates or changes nothing), to this process's
// namespace at a path inside them, or fails: with ErrNotFound, or as an
// invalid name exactly when parseName says so.
func FuzzResolveName(f *testing.F) {
	rv, self := fakeRoot(f)
	for _, s := range []string{"host", "pid:1", "pid:77", "pid:0", "pid:abc", "pid:2147483648", "self", "plain", "other",
		inoName(self), "ino:1", "ino:", "", ".", "..", "a/b", "../etc", "x\x00", "lab-pod-a", "cni-fcb7e361-1c8d-d1bf-75da-229c6a8c95ef"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		fuzztest.Bounded(t, func() error {
			path, ino, err := rv.resolve(name)
			_, perr := parseName(name)
			switch {
			case perr != nil:
				if err == nil || err.Error() != perr.Error() {
					return fmt.Errorf("resolve(%q) = %v, want %v", name, err, perr)
				}
			case err == nil:
				if ino != self || !strings.HasPrefix(path, filepath.Dir(rv.procDir)+"/") {
					return fmt.Errorf("resolve(%q) = %s, %d", name, path, ino)
				}
			case strings.Contains(err.Error(), "invalid network namespace name"):
				return fmt.Errorf("resolve(%q) = %v for a name parseName takes", name, err)
			case !errors.Is(err, ErrNotFound) && name != "plain":
				return fmt.Errorf("resolve(%q) = %v", name, err)
			}
			return nil
		})
	})
}

// FuzzRegistryNaming: whatever is bind-mounted under /run/netns and
// whichever processes live where, every name the registry gives a
// namespace resolves (the way ResolveName reads it) to that namespace.
func FuzzRegistryNaming(f *testing.F) {
	f.Add("blue", uint32(100), "aaa", uint32(100), uint32(7), uint32(200), uint32(300))
	f.Add("lab-node-a", uint32(100), "lab-pod-a", uint32(101), uint32(1), uint32(300), uint32(300))
	f.Add("host", uint32(100), "x", uint32(300), uint32(1), uint32(300), uint32(300))
	f.Add("pid:1", uint32(100), "ino:100", uint32(100), uint32(1), uint32(300), uint32(300))
	f.Add("ino:5", uint32(7), "cni-1", uint32(5), uint32(9), uint32(5), uint32(300))
	f.Fuzz(func(t *testing.T, name1 string, ino1 uint32, name2 string, ino2 uint32, pid, pidIno, host uint32) {
		s := newScan(Inode(host), "")
		for _, n := range []struct {
			name string
			ino  uint32
		}{{name1, ino1}, {name2, ino2}} {
			// what a directory listing can hold
			if n.ino != 0 && n.name != "" && n.name != "." && n.name != ".." && !strings.ContainsAny(n.name, "/\x00") {
				s.named[n.name] = Inode(n.ino)
			}
		}
		if pid > 1 && pid < 1<<22 && pidIno != 0 { // pid 1 is the host's
			s.addPid(Inode(pidIno), int(pid))
		}
		if host != 0 {
			s.addPid(Inode(host), 1)
		}
		fuzztest.Bounded(t, func() error { return checkNaming(s) })
	})
}

// checkNaming resolves every entry's name in the world of s.
func checkNaming(s *scanResult) error {
	for ino, e := range s.build() {
		if e.Inode != ino {
			return fmt.Errorf("entry %+v under %d", e, ino)
		}
		ref, err := parseName(e.Name)
		if err != nil {
			return fmt.Errorf("entry %+v: %v", e, err)
		}
		var got Inode
		switch {
		case ref.kind == refHost:
			got = s.host
		case ref.kind == refPid:
			for i, p := range s.pids {
				if uint64(p) == ref.n {
					got = i
				}
			}
		case ref.n != 0:
			got = Inode(ref.n) // "ino:N"
		default:
			got = s.named[e.Name]
		}
		if got != ino {
			return fmt.Errorf("namespace %d is named %q, which resolves to %d (scan %+v)", ino, e.Name, got, *s)
		}
		if ref.kind == refNamed && s.named[e.Name] == ino && e.Path != filepath.Join(s.netnsDir, e.Name) {
			return fmt.Errorf("entry %+v: path", e)
		}
	}
	return nil
}
