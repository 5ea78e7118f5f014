//go:build linux

package netnsutil

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---------------------------------------------------------------------------
// Unit tests (no privileges needed)
// ---------------------------------------------------------------------------

// The main goroutine keeps the main thread: a goroutine that fails to
// restore its netns must die with its thread, and the runtime cannot end
// the main thread (it would stay, wedged, in the foreign namespace).
func init() { runtime.LockOSThread() }

func TestNameFormatting(t *testing.T) {
	if got := inoName(4026531840); got != "ino:4026531840" {
		t.Errorf("inoName = %q", got)
	}
	if got := pidName(42); got != "pid:42" {
		t.Errorf("pidName = %q", got)
	}
	if got := ifName(7); got != "if7" {
		t.Errorf("ifName = %q", got)
	}
}

func newScan(host Inode, hostPath string) *scanResult {
	return &scanResult{
		procDir:  "/proc",
		netnsDir: "/run/netns",
		host:     host,
		hostPath: hostPath,
		named:    map[string]Inode{},
		pids:     map[Inode]int{},
	}
}

func TestBuildNamingRule(t *testing.T) {
	s := newScan(300, "/proc/1/ns/net")
	s.named["blue"] = 100
	s.named["aaa"] = 100 // two names for one netns: smallest wins
	s.named["red"] = 200
	for _, p := range []struct {
		ino Inode
		pid int
	}{{300, 1}, {300, 2}, {100, 50}, {400, 99}, {400, 20}, {400, 31}, {500, 7}, {200, 3}} {
		s.addPid(p.ino, p.pid)
	}
	got := s.build()
	want := map[Inode]Entry{
		100: {100, "aaa", "/run/netns/aaa"},
		200: {200, "red", "/run/netns/red"},
		300: {300, "host", "/proc/1/ns/net"},
		400: {400, "pid:20", "/proc/20/ns/net"},
		500: {500, "pid:7", "/proc/7/ns/net"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d entries %v, want %d", len(got), got, len(want))
	}
	for ino, w := range want {
		if got[ino] != w {
			t.Errorf("entry %d = %+v, want %+v", ino, got[ino], w)
		}
	}
}

func TestBuildHostBindMountedWins(t *testing.T) {
	// `ip netns attach hostns 1`: the /run/netns name wins over "host".
	s := newScan(300, "/proc/1/ns/net")
	s.named["hostns"] = 300
	s.addPid(300, 1)
	if e := s.build()[300]; e.Name != "hostns" || e.Path != "/run/netns/hostns" {
		t.Errorf("got %+v", e)
	}
}

func TestBuildHostWithoutPID1(t *testing.T) {
	// PID 1 not accessible: host path comes from a process inside it.
	s := newScan(netNSInitIno, "")
	s.addPid(netNSInitIno, 12)
	s.addPid(netNSInitIno, 5)
	if e := s.build()[netNSInitIno]; e.Name != "host" || e.Path != "/proc/5/ns/net" {
		t.Errorf("got %+v", e)
	}
	// Host known but no process visible: named, without path.
	s = newScan(netNSInitIno, "")
	if e := s.build()[netNSInitIno]; e.Name != "host" || e.Path != "" {
		t.Errorf("got %+v", e)
	}
}

func TestRegistryAllSorted(t *testing.T) {
	s := newScan(3, "/proc/1/ns/net")
	s.named["zeta"] = 1
	s.named["alpha"] = 2
	s.addPid(4, 10)
	s.addPid(3, 1)
	r := NewRegistry()
	r.byIno = s.build()
	r.host = s.host
	r.lastRefresh = time.Now() // no rescans from lookups below
	var names []string
	for _, e := range r.All() {
		names = append(names, e.Name)
	}
	if got, want := strings.Join(names, ","), "alpha,host,pid:10,zeta"; got != want {
		t.Errorf("All() names = %s, want %s", got, want)
	}
	if r.Host() != 3 || r.Name(3) != "host" {
		t.Errorf("Host() = %d, Name = %q", r.Host(), r.Name(3))
	}
	if p, ok := r.Path(2); !ok || p != "/run/netns/alpha" {
		t.Errorf("Path(2) = %q, %v", p, ok)
	}
	if p, ok := r.Path(999); ok {
		t.Errorf("Path(999) = %q, want miss", p)
	}
}

func TestRegistryUnknownAndRateLimit(t *testing.T) {
	r := NewRegistry()
	_ = r.Refresh()        // may fail partially without privileges
	const bogus = Inode(1) // never a namespace inode
	before := r.refreshes.Load()
	for i := 0; i < 20; i++ {
		if got := r.Name(bogus); got != "ino:1" {
			t.Fatalf("Name(1) = %q", got)
		}
	}
	// Refresh just ran, so misses within 200ms must not rescan (or at most
	// once if the test was slow).
	if n := r.refreshes.Load() - before; n > 1 {
		t.Errorf("%d rescans for 20 quick misses, want <= 1", n)
	}
	time.Sleep(missRefreshInterval + 50*time.Millisecond)
	before = r.refreshes.Load()
	r.Name(bogus)
	r.Name(bogus)
	if n := r.refreshes.Load() - before; n != 1 {
		t.Errorf("%d rescans after interval, want 1", n)
	}
	if got := r.Name(0); got != "ino:0" {
		t.Errorf("Name(0) = %q", got)
	}
}

func TestResolveNameErrors(t *testing.T) {
	for _, name := range []string{"skbtrail-nsu-does-not-exist", "pid:999999999", "pid:abc", "ino:1"} {
		_, _, err := ResolveName(name)
		if err == nil {
			t.Errorf("ResolveName(%q): no error", name)
			continue
		}
		if !errors.Is(err, ErrNotFound) {
			t.Errorf("ResolveName(%q): %v does not match ErrNotFound", name, err)
		}
		want := fmt.Sprintf("network namespace %q not found (see ip netns list)", name)
		if err.Error() != want {
			t.Errorf("ResolveName(%q) error = %q, want %q", name, err.Error(), want)
		}
	}
	for _, name := range []string{"", ".", "..", "a/b", "../etc"} {
		_, _, err := ResolveName(name)
		if err == nil || errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "invalid") {
			t.Errorf("ResolveName(%q) = %v, want invalid-name error", name, err)
		}
	}
}

func TestInodeOfErrors(t *testing.T) {
	if _, err := InodeOf("/nonexistent/skbtrail"); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("InodeOf(missing) = %v", err)
	}
	if _, err := InodeOf("/"); err == nil || !strings.Contains(err.Error(), "not a namespace") {
		t.Errorf("InodeOf(/) = %v", err)
	}
	// Our own mount namespace is accessible without privileges.
	if _, err := InodeOf("/proc/self/ns/mnt"); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Errorf("InodeOf(mnt ns) = %v", err)
	}
	ino, err := InodeOf("/proc/self/ns/net")
	if err != nil {
		t.Fatalf("InodeOf(self): %v", err)
	}
	want := readlinkIno(t, "/proc/self/ns/net")
	if ino != want {
		t.Errorf("InodeOf(self) = %d, readlink says %d", ino, want)
	}
}

func TestDoOpenError(t *testing.T) {
	called := false
	err := Do("/nonexistent/netns", func() error { called = true; return nil })
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/netns") {
		t.Errorf("Do(missing) = %v, want error mentioning path", err)
	}
	if called {
		t.Error("fn was called")
	}
	if _, err := NewHandle("/nonexistent/netns"); err == nil || !strings.Contains(err.Error(), "/nonexistent/netns") {
		t.Errorf("NewHandle(missing) = %v", err)
	}
}

func TestLinksUnknown(t *testing.T) {
	r := NewRegistry()
	l := NewLinks(r)
	if got := l.Name(1, 0); got != "if0" {
		t.Errorf("Name(1, 0) = %q", got)
	}
	if got := l.Name(1, 5); got != "if5" { // inode 1 is never a namespace
		t.Errorf("Name(1, 5) = %q", got)
	}
}

// ---------------------------------------------------------------------------
// Privileged tests
// ---------------------------------------------------------------------------

func requirePrivileged(t *testing.T) {
	t.Helper()
	var why string
	if os.Geteuid() != 0 {
		why = "needs root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "needs the ip command (iproute2)"
	}
	if why == "" {
		return
	}
	if os.Getenv("SKBTRAIL_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("%s (SKBTRAIL_REQUIRE_PRIVILEGED=1)", why)
	}
	t.Skip(why)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// newTestNetns creates a named netns (ip netns add) that is deleted when the
// test ends, also on failure.
func newTestNetns(t *testing.T) (string, Inode) {
	t.Helper()
	b := make([]byte, 4)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	name := "skbtrail-nsu-" + hex.EncodeToString(b)
	t.Cleanup(func() {
		if _, err := os.Lstat(filepath.Join(defaultNetnsDir, name)); errors.Is(err, os.ErrNotExist) {
			return
		}
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v\n%s", name, err, out)
		}
		if _, err := os.Lstat(filepath.Join(defaultNetnsDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("netns %s still present after delete", name)
		}
	})
	run(t, "ip", "netns", "add", name)
	ino, err := InodeOf(filepath.Join(defaultNetnsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	return name, ino
}

// startUnshared starts `unshare -n sleep 30` and returns its pid and netns
// inode; the process is killed by pid in cleanup.
func startUnshared(t *testing.T) (int, Inode) {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		if os.Getenv("SKBTRAIL_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("needs unshare")
		}
		t.Skip("needs unshare")
	}
	cmd := exec.Command("unshare", "-n", "sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	self := readlinkIno(t, "/proc/self/ns/net")
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if ino, err := InodeOf(procNetPath("/proc", pid)); err == nil && ino != self {
			return pid, ino
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("pid %d did not enter a new netns", pid)
	return 0, 0
}

func readlinkIno(t *testing.T, path string) Inode {
	t.Helper()
	s, err := os.Readlink(path)
	if err != nil {
		t.Fatal(err)
	}
	var n uint32
	if _, err := fmt.Sscanf(s, "net:[%d]", &n); err != nil {
		t.Fatalf("readlink %s = %q: %v", path, s, err)
	}
	return Inode(n)
}

func threadNetns(t *testing.T) Inode {
	t.Helper()
	ino, err := InodeOf("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	return ino
}

// ifindexOf returns the ifindex of dev in netns name, as reported by ip.
func ifindexOf(t *testing.T, ns, dev string) uint32 {
	t.Helper()
	out := run(t, "ip", "-n", ns, "-o", "link", "show", "dev", dev)
	idx, _, ok := strings.Cut(out, ":")
	n, err := strconv.ParseUint(strings.TrimSpace(idx), 10, 32)
	if !ok || err != nil {
		t.Fatalf("cannot parse ifindex from %q", out)
	}
	return uint32(n)
}

// addTestLink creates a dummy interface (or, if the kernel lacks dummy, a
// veth pair with both ends) inside netns ns and returns its ifindex.
func addTestLink(t *testing.T, ns, dev string) uint32 {
	t.Helper()
	if out, err := exec.Command("ip", "-n", ns, "link", "add", dev, "type", "dummy").CombinedOutput(); err != nil {
		t.Logf("dummy unavailable (%v: %s), using veth", err, strings.TrimSpace(string(out)))
		run(t, "ip", "-n", ns, "link", "add", dev, "type", "veth", "peer", "name", dev+"p")
	}
	return ifindexOf(t, ns, dev)
}

func TestPrivRegistryNamedNetns(t *testing.T) {
	requirePrivileged(t)
	hostBefore := readlinkIno(t, "/proc/self/ns/net")
	name, ino := newTestNetns(t)

	r := NewRegistry()
	if err := r.Refresh(); err != nil {
		t.Logf("Refresh: %v", err)
	}
	if got := r.Name(ino); got != name {
		t.Errorf("Name(%d) = %q, want %q", ino, got, name)
	}
	if p, ok := r.Path(ino); !ok || p != "/run/netns/"+name {
		t.Errorf("Path = %q, %v", p, ok)
	}
	found := false
	for _, e := range r.All() {
		if e.Inode == ino {
			found = e.Name == name && e.Path == "/run/netns/"+name
		}
	}
	if !found {
		t.Errorf("All() lacks %s: %+v", name, r.All())
	}

	// A netns created after Refresh is picked up by a miss (after 200ms).
	name2, ino2 := newTestNetns(t)
	time.Sleep(missRefreshInterval + 50*time.Millisecond)
	if got := r.Name(ino2); got != name2 {
		t.Errorf("Name(new netns) = %q, want %q", got, name2)
	}

	// NameNow never rescans itself: a miss answers "ino:<n>" at once and
	// starts one background rescan, after which the name is known
	name3, ino3 := newTestNetns(t)
	time.Sleep(missRefreshInterval + 50*time.Millisecond)
	before := r.refreshes.Load()
	if got := r.NameNow(ino3); got != inoName(ino3) {
		t.Errorf("NameNow(new netns) = %q, want %q until the rescan ran", got, inoName(ino3))
	}
	deadline := time.Now().Add(5 * time.Second)
	for r.NameNow(ino3) != name3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := r.NameNow(ino3); got != name3 || r.refreshes.Load() == before {
		t.Errorf("NameNow after the background rescan = %q, want %q (%d rescans)", got, name3, r.refreshes.Load()-before)
	}

	path, rino, err := ResolveName(name)
	if err != nil || path != "/run/netns/"+name || rino != ino {
		t.Errorf("ResolveName(%q) = %q, %d, %v", name, path, rino, err)
	}
	if got := readlinkIno(t, "/proc/self/ns/net"); got != hostBefore {
		t.Errorf("process netns changed: %d -> %d", hostBefore, got)
	}
}

func TestPrivRegistryHost(t *testing.T) {
	requirePrivileged(t)
	r := NewRegistry()
	if err := r.Refresh(); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
	h := r.Host()
	if h == 0 {
		t.Fatal("Host() = 0")
	}
	if ino, err := InodeOf("/proc/1/ns/net"); err == nil {
		if ino != h {
			t.Errorf("Host() = %d, /proc/1/ns/net = %d", h, ino)
		}
	} else {
		t.Logf("/proc/1/ns/net not accessible (%v); host = %d", err, h)
	}
	p, ok := r.Path(h)
	if !ok {
		t.Fatal("no path for host")
	}
	if ino, err := InodeOf(p); err != nil || ino != h {
		t.Errorf("host path %s -> %d, %v; want %d", p, ino, err, h)
	}
	want := "host"
	if strings.HasPrefix(p, defaultNetnsDir+"/") { // host bind-mounted: named
		want = filepath.Base(p)
	}
	if got := r.Name(h); got != want {
		t.Errorf("Name(host) = %q, want %q", got, want)
	}
	rp, rino, err := ResolveName("host")
	if err != nil || rino != h {
		t.Errorf("ResolveName(host) = %q, %d, %v; want inode %d", rp, rino, err, h)
	}
}

func TestPrivRegistryPidNaming(t *testing.T) {
	requirePrivileged(t)
	pid, ino := startUnshared(t)
	r := NewRegistry()
	_ = r.Refresh()
	if got, want := r.Name(ino), fmt.Sprintf("pid:%d", pid); got != want {
		t.Errorf("Name = %q, want %q", got, want)
	}
	if p, ok := r.Path(ino); !ok || p != fmt.Sprintf("/proc/%d/ns/net", pid) {
		t.Errorf("Path = %q, %v", p, ok)
	}
	path, rino, err := ResolveName(fmt.Sprintf("pid:%d", pid))
	if err != nil || rino != ino || path != fmt.Sprintf("/proc/%d/ns/net", pid) {
		t.Errorf("ResolveName(pid) = %q, %d, %v", path, rino, err)
	}
	path, rino, err = ResolveName(fmt.Sprintf("ino:%d", ino))
	if err != nil || rino != ino || path != fmt.Sprintf("/proc/%d/ns/net", pid) {
		t.Errorf("ResolveName(ino) = %q, %d, %v", path, rino, err)
	}
}

func TestPrivDo(t *testing.T) {
	requirePrivileged(t)
	name, ino := newTestNetns(t)
	path := "/run/netns/" + name

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetns(t)
	if before == ino {
		t.Fatal("test already runs in the target netns")
	}

	var inside Inode
	var ifaces []string
	err := Do(path, func() error {
		var err error
		inside, err = InodeOf("/proc/thread-self/ns/net")
		if err != nil {
			return err
		}
		l, err := net.Interfaces()
		for _, i := range l {
			ifaces = append(ifaces, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	if inside != ino {
		t.Errorf("fn ran in netns %d, want %d", inside, ino)
	}
	if strings.Join(ifaces, ",") != "lo" {
		t.Errorf("interfaces inside = %v, want [lo]", ifaces)
	}
	if after := threadNetns(t); after != before {
		t.Errorf("caller netns changed: %d -> %d", before, after)
	}

	// fn's error is returned as is.
	sentinel := errors.New("boom")
	if err := Do(path, func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do error = %v, want %v", err, sentinel)
	}

	// A panic propagates to the caller, after the thread was restored.
	func() {
		defer func() {
			if p := recover(); p != "kaboom" {
				t.Errorf("recovered %v, want kaboom", p)
			}
		}()
		_ = Do(path, func() error { panic("kaboom") })
	}()

	// setns failure (a mount namespace is not a netns): wrapped with path,
	// fn not run.
	called := false
	err = Do("/proc/self/ns/mnt", func() error { called = true; return nil })
	if err == nil || called || !strings.Contains(err.Error(), "/proc/self/ns/mnt") {
		t.Errorf("Do(mnt ns) = %v, called=%v", err, called)
	}
	if after := threadNetns(t); after != before {
		t.Errorf("caller netns changed: %d -> %d", before, after)
	}
	checkAllThreadsIn(t, before)
}

// TestPrivDoRestoreFailure makes the restore fail (fn drops CAP_SYS_ADMIN
// from its thread) and checks the tainted thread is not reused.
func TestPrivDoRestoreFailure(t *testing.T) {
	requirePrivileged(t)
	name, ino := newTestNetns(t)
	orig := readlinkIno(t, "/proc/self/ns/net")

	var tid int
	err := Do("/run/netns/"+name, func() error {
		tid = unix.Gettid()
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[unix.CAP_SYS_ADMIN/32].Effective &^= 1 << (unix.CAP_SYS_ADMIN % 32)
		return unix.Capset(&hdr, &data[0])
	})
	if err == nil || !strings.Contains(err.Error(), "restore") || !strings.Contains(err.Error(), name) {
		t.Fatalf("Do = %v, want restore error", err)
	}
	t.Logf("Do returned: %v", err)
	// The locked thread must exit with its goroutine.
	taskDir := fmt.Sprintf("/proc/self/task/%d", tid)
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(taskDir); errors.Is(err, os.ErrNotExist) {
			break
		}
		if time.Now().After(deadline) {
			// If the thread survived, it must at least not be in the target.
			t.Fatalf("thread %d still alive after failed restore", tid)
		}
		time.Sleep(10 * time.Millisecond)
	}
	checkAllThreadsIn(t, orig)
	if got := readlinkIno(t, "/proc/self/ns/net"); got == ino {
		t.Error("process main thread ended up in the test netns")
	}
}

// checkAllThreadsIn checks that every thread of the process is in netns want.
func checkAllThreadsIn(t *testing.T, want Inode) {
	t.Helper()
	// Spread some goroutines over threads first, so a leaked thread would
	// also be picked up by ordinary goroutines.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var bad []string
	for i := 0; i < 4*runtime.GOMAXPROCS(0); i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			ino, err := InodeOf("/proc/thread-self/ns/net")
			if err != nil || ino != want {
				mu.Lock()
				bad = append(bad, fmt.Sprintf("tid %d: %d %v", unix.Gettid(), ino, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		ino, err := InodeOf("/proc/self/task/" + task.Name() + "/ns/net")
		if err != nil {
			continue // thread exited meanwhile
		}
		if ino != want {
			bad = append(bad, fmt.Sprintf("task %s: %d", task.Name(), ino))
		}
	}
	if len(bad) > 0 {
		t.Errorf("threads outside netns %d: %v", want, bad)
	}
}

func TestPrivDoConcurrent(t *testing.T) {
	requirePrivileged(t)
	nameA, inoA := newTestNetns(t)
	nameB, inoB := newTestNetns(t)
	orig := readlinkIno(t, "/proc/self/ns/net")
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name, want := nameA, inoA
			if i%2 == 1 {
				name, want = nameB, inoB
			}
			errs <- Do("/run/netns/"+name, func() error {
				got, err := InodeOf("/proc/thread-self/ns/net")
				if err == nil && got != want {
					err = fmt.Errorf("in %d, want %d", got, want)
				}
				return err
			})
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	checkAllThreadsIn(t, orig)
}

func TestPrivNewHandle(t *testing.T) {
	requirePrivileged(t)
	name, _ := newTestNetns(t)
	idx := addTestLink(t, name, "nsu0")

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	before := threadNetns(t)

	h, err := NewHandle("/run/netns/" + name)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if after := threadNetns(t); after != before {
		t.Errorf("caller netns changed: %d -> %d", before, after)
	}
	links, err := h.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	got := map[int]string{}
	for _, l := range links {
		got[l.Attrs().Index] = l.Attrs().Name
	}
	if got[1] != "lo" || got[int(idx)] != "nsu0" {
		t.Errorf("links in test netns = %v", got)
	}
	checkAllThreadsIn(t, readlinkIno(t, "/proc/self/ns/net"))
}

func TestPrivLinks(t *testing.T) {
	requirePrivileged(t)
	name, ino := newTestNetns(t)
	idx := addTestLink(t, name, "nsu0")

	r := NewRegistry()
	_ = r.Refresh()
	l := NewLinks(r)
	if got := l.Name(ino, 1); got != "lo" {
		t.Errorf("Name(lo) = %q", got)
	}
	if got := l.Name(ino, idx); got != "nsu0" {
		t.Errorf("Name(%d) = %q, want nsu0", idx, got)
	}
	if got := l.Name(ino, 9999); got != "if9999" {
		t.Errorf("Name(9999) = %q", got)
	}

	// Cached: hits do not dump again; quick misses are rate limited.
	n := l.fetches.Load()
	for i := 0; i < 10; i++ {
		l.Name(ino, 1)
		l.Name(ino, idx)
		l.Name(ino, 9999)
	}
	if d := l.fetches.Load() - n; d > 1 {
		t.Errorf("%d link dumps for cached/quick lookups, want <= 1", d)
	}

	// A link added later is found after the rate limit interval.
	idx2 := addTestLink(t, name, "nsu1")
	time.Sleep(missRefreshInterval + 50*time.Millisecond)
	if got := l.Name(ino, idx2); got != "nsu1" {
		t.Errorf("Name(%d) = %q, want nsu1", idx2, got)
	}

	// Host netns: read-only lookup of lo.
	if got := l.Name(r.Host(), 1); got != "lo" {
		t.Errorf("host Name(1) = %q", got)
	}
	// Unknown netns.
	if got := l.Name(1, 1); got != "if1" {
		t.Errorf("Name(unknown ns, 1) = %q", got)
	}
}
