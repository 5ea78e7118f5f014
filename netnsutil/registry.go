//go:build linux

// Package netnsutil names network namespaces and enters them safely.
//
// The kernel identifies a network namespace by the inode number of its nsfs
// file (net->ns.inum), which is what skbtrail's BPF programs report. This
// package maps such inode numbers to human readable names, following one
// fixed naming rule (in order of preference):
//
//  1. the name `ip netns list` shows, when the namespace is bind-mounted
//     under /run/netns (the lexically smallest one if there are several),
//     unless ResolveName reads that name as another namespace's ("host",
//     "pid:N", "ino:M");
//  2. "host" for the initial network namespace (the one of PID 1,
//     /proc/1/ns/net);
//  3. "pid:<pid>" for the lowest pid of a process living in it;
//  4. "ino:<inode>" otherwise.
//
// It also provides helpers to run code inside a namespace (Do), to obtain a
// netlink handle bound to a namespace (NewHandle) and a cache of interface
// names per namespace (Links).
package netnsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Inode is the inode number of a namespace's nsfs file (net->ns.inum).
type Inode uint32

// Entry describes one known network namespace.
type Entry struct {
	Inode Inode
	// Name follows the package naming rule ("host", "pid:N", or the
	// /run/netns name).
	Name string
	// Path opens the namespace (/run/netns/NAME, /proc/1/ns/net or
	// /proc/PID/ns/net). It may be empty when no openable path is known.
	Path string
}

const (
	// missRefreshInterval bounds how often a lookup miss may trigger a rescan.
	missRefreshInterval = 200 * time.Millisecond

	defaultProcDir  = "/proc"
	defaultNetnsDir = "/run/netns"

	// netNSInitIno is the fixed inode number of the initial network
	// namespace on Linux >= 6.18 (NET_NS_INIT_INO in <linux/nsfs.h>). The
	// 0xEFFFFFxx range is reserved for init namespaces and never handed
	// out dynamically, so an nsfs inode with this number can only be the
	// initial network namespace. It is used to identify the host namespace
	// when /proc/1/ns/net cannot be accessed (e.g. in some sandboxes).
	netNSInitIno Inode = 0xEFFFFFF9
)

// Registry maps network namespace inodes to names and paths. It is safe for
// concurrent use. The zero value is not usable; call NewRegistry.
type Registry struct {
	procDir  string
	netnsDir string

	mu    sync.RWMutex
	byIno map[Inode]Entry
	host  Inode
	// scope, when set, limits the namespaces this registry stands for
	// (one lab "node" of several sharing a kernel): patterns (path.Match
	// syntax) over names, and the inodes that matched at the last scan.
	scope   []string
	inScope map[Inode]bool

	refreshMu   sync.Mutex // serializes rescans; guards lastRefresh
	lastRefresh time.Time

	refreshes atomic.Uint64 // number of rescans, for tests
	// rescanning: a rescan NameNow started is running (at most one)
	rescanning atomic.Bool
}

// NewRegistry returns an empty registry; call Refresh to populate it.
func NewRegistry() *Registry {
	return &Registry{
		procDir:  defaultProcDir,
		netnsDir: defaultNetnsDir,
		byIno:    map[Inode]Entry{},
	}
}

// Refresh rescans /run/netns and /proc/[0-9]*/ns/net and replaces the
// registry's contents. Processes that vanish during the scan or cannot be
// inspected are ignored. The registry is updated even when an error is
// returned; the error reports that the host namespace could not be
// determined or that /proc could not be listed.
func (r *Registry) Refresh() error {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	return r.refreshLocked()
}

func (r *Registry) refreshLocked() error {
	s, err := scan(r.procDir, r.netnsDir)
	byIno := s.build()
	r.mu.Lock()
	r.byIno = byIno
	r.host = s.host
	r.inScope = scopeOf(byIno, r.scope)
	r.mu.Unlock()
	r.lastRefresh = time.Now()
	r.refreshes.Add(1)
	return err
}

// refreshOnMiss rescans after a lookup miss for ino, at most once per
// missRefreshInterval.
func (r *Registry) refreshOnMiss(ino Inode) {
	if ino == 0 {
		return
	}
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	if _, ok := r.lookup(ino); ok {
		return // someone else refreshed while we were waiting
	}
	r.maybeRefreshLocked()
}

// refreshRateLimited rescans unless a rescan happened in the last 200ms.
func (r *Registry) refreshRateLimited() {
	r.refreshMu.Lock()
	defer r.refreshMu.Unlock()
	r.maybeRefreshLocked()
}

func (r *Registry) maybeRefreshLocked() {
	if !r.lastRefresh.IsZero() && time.Since(r.lastRefresh) < missRefreshInterval {
		return
	}
	_ = r.refreshLocked()
}

func (r *Registry) lookup(ino Inode) (Entry, bool) {
	r.mu.RLock()
	e, ok := r.byIno[ino]
	r.mu.RUnlock()
	return e, ok
}

func (r *Registry) get(ino Inode) (Entry, bool) {
	if e, ok := r.lookup(ino); ok {
		return e, true
	}
	r.refreshOnMiss(ino)
	return r.lookup(ino)
}

// Name returns the name of the network namespace with the given inode,
// following the package naming rule. On a miss the registry is rescanned
// (at most once per 200ms) and the lookup retried; if the namespace is
// still unknown, "ino:<n>" is returned.
func (r *Registry) Name(ino Inode) string {
	if e, ok := r.get(ino); ok {
		return e.Name
	}
	return inoName(ino)
}

// NameNow is Name for callers that must not block (the event processor):
// it never rescans itself. On a miss it starts one background rescan (rate
// limited like Name's) and returns "ino:<n>"; later calls, or Name, give
// the real name once that rescan has found the namespace.
func (r *Registry) NameNow(ino Inode) string {
	if e, ok := r.lookup(ino); ok {
		return e.Name
	}
	if ino != 0 && r.rescanning.CompareAndSwap(false, true) {
		go func() {
			defer r.rescanning.Store(false)
			r.refreshOnMiss(ino)
		}()
	}
	return inoName(ino)
}

// Path returns a path that opens the network namespace with the given inode:
// /run/netns/NAME, /proc/1/ns/net for the host, or /proc/PID/ns/net. Misses
// are handled like in Name.
func (r *Registry) Path(ino Inode) (string, bool) {
	e, ok := r.get(ino)
	if !ok || e.Path == "" || !r.InScope(ino) {
		return "", false
	}
	return e.Path, true
}

// SetScope limits the registry to the namespaces whose names match one of
// patterns (path.Match syntax, e.g. "lab-node-a" or "lab-pod-a*"): All and
// Path know only them, InScope tells them apart. Names are still given for
// every namespace. It is meant for several lab "nodes" sharing one kernel,
// each with its own skbtrail daemon; nil patterns: every namespace.
func (r *Registry) SetScope(patterns []string) error {
	for _, p := range patterns {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("netns pattern %q: %w", p, err)
		}
	}
	r.mu.Lock()
	r.scope = patterns
	r.inScope = scopeOf(r.byIno, patterns)
	r.mu.Unlock()
	return nil
}

// scopeOf is the set of inodes whose names match patterns (nil: no scope).
func scopeOf(byIno map[Inode]Entry, patterns []string) map[Inode]bool {
	if len(patterns) == 0 {
		return nil
	}
	in := map[Inode]bool{}
	for ino, e := range byIno {
		for _, p := range patterns {
			if ok, _ := path.Match(p, e.Name); ok {
				in[ino] = true
				break
			}
		}
	}
	return in
}

// Scoped reports whether SetScope limited the registry.
func (r *Registry) Scoped() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.inScope != nil
}

// InScope reports whether the namespace belongs to the registry's scope
// (always true without one). It never rescans: a namespace not seen by the
// last scan is out of scope until the next one.
func (r *Registry) InScope(ino Inode) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.inScope == nil || r.inScope[ino]
}

// All returns all known namespaces (of the scope, when set) sorted by name.
func (r *Registry) All() []Entry {
	r.mu.RLock()
	out := make([]Entry, 0, len(r.byIno))
	for ino, e := range r.byIno {
		if r.inScope != nil && !r.inScope[ino] {
			continue
		}
		out = append(out, e)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Inode < out[j].Inode
	})
	return out
}

// Host returns the inode of the initial network namespace, or 0 if it is not
// known (before the first Refresh).
func (r *Registry) Host() Inode {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.host
}

func inoName(ino Inode) string { return "ino:" + strconv.FormatUint(uint64(ino), 10) }
func pidName(pid int) string   { return "pid:" + strconv.Itoa(pid) }

// scanResult is the raw outcome of a scan, turned into entries by build.
type scanResult struct {
	procDir  string
	netnsDir string

	host     Inode
	hostPath string // set when host was found via PID 1

	named map[string]Inode // /run/netns name -> inode
	pids  map[Inode]int    // inode -> lowest pid
}

// addPid records that pid lives in namespace ino, keeping the lowest pid.
func (s *scanResult) addPid(ino Inode, pid int) {
	if cur, ok := s.pids[ino]; !ok || pid < cur {
		s.pids[ino] = pid
	}
}

// build applies the naming rule to a scan result.
func (s *scanResult) build() map[Inode]Entry {
	out := make(map[Inode]Entry, len(s.named)+len(s.pids)+1)

	// 1. /run/netns names win; pick the lexically smallest if several. A
	// name ResolveName reads as another namespace's ("host", "pid:N",
	// "ino:M") does not name this one: the rules below do, and at worst
	// "ino:N", which ResolveName finds through the bind mount.
	misleading := map[Inode]string{}
	for name, ino := range s.named {
		if !namesItself(name, ino) {
			if m, ok := misleading[ino]; !ok || name < m {
				misleading[ino] = name
			}
			continue
		}
		if e, ok := out[ino]; ok && e.Name < name {
			continue
		}
		out[ino] = Entry{Inode: ino, Name: name, Path: filepath.Join(s.netnsDir, name)}
	}

	// 2. host.
	if s.host != 0 {
		if _, ok := out[s.host]; !ok {
			path := s.hostPath
			if path == "" {
				if pid, ok := s.pids[s.host]; ok {
					path = procNetPath(s.procDir, pid)
				}
			}
			out[s.host] = Entry{Inode: s.host, Name: "host", Path: path}
		}
	}

	// 3. lowest pid.
	for ino, pid := range s.pids {
		if _, ok := out[ino]; ok {
			continue
		}
		out[ino] = Entry{Inode: ino, Name: pidName(pid), Path: procNetPath(s.procDir, pid)}
	}

	// 4. bind-mounted only under a misleading name.
	for ino, name := range misleading {
		if _, ok := out[ino]; !ok {
			out[ino] = Entry{Inode: ino, Name: inoName(ino), Path: filepath.Join(s.netnsDir, name)}
		}
	}
	return out
}

// namesItself reports whether ResolveName reads the /run/netns name of
// namespace ino as that bind mount: not "host" or "pid:N", and "ino:N"
// only for namespace N.
func namesItself(name string, ino Inode) bool {
	ref, err := parseName(name)
	return err == nil && ref.kind == refNamed && (ref.n == 0 || ref.n == uint64(ino))
}

func procNetPath(procDir string, pid int) string {
	return filepath.Join(procDir, strconv.Itoa(pid), "ns", "net")
}

// scan reads netnsDir and procDir. It always returns a usable result; the
// error reports problems that make the result incomplete.
func scan(procDir, netnsDir string) (*scanResult, error) {
	s := &scanResult{
		procDir:  procDir,
		netnsDir: netnsDir,
		named:    map[string]Inode{},
		pids:     map[Inode]int{},
	}
	var errs []error

	// /run/netns: only nsfs bind mounts count; a plain file left behind by
	// a failed `ip netns add` has an unrelated tmpfs inode.
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, de := range ents {
			p := filepath.Join(netnsDir, de.Name())
			if ino, err := statNsfs(p); err == nil {
				s.named[de.Name()] = ino
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("netnsutil: read %s: %w", netnsDir, err))
	}

	// /proc/[0-9]*/ns/net
	if ents, err := os.ReadDir(procDir); err == nil {
		for _, de := range ents {
			pid, err := strconv.Atoi(de.Name())
			if err != nil || pid <= 0 {
				continue
			}
			ino, err := statIno(procNetPath(procDir, pid))
			if err != nil {
				continue // vanished, zombie, EACCES, ...
			}
			s.addPid(ino, pid)
		}
	} else {
		errs = append(errs, fmt.Errorf("netnsutil: read %s: %w", procDir, err))
	}

	// host: the netns of PID 1.
	hostPath := procNetPath(procDir, 1)
	if ino, err := statIno(hostPath); err == nil {
		s.host, s.hostPath = ino, hostPath
	} else {
		// PID 1 is not inspectable. On Linux >= 6.18 the initial netns has
		// a fixed inode; use it if we can see it.
		selfIno, _ := statIno(filepath.Join(procDir, "self", "ns", "net"))
		if _, seen := s.pids[netNSInitIno]; seen || selfIno == netNSInitIno {
			s.host = netNSInitIno
		} else {
			errs = append(errs, fmt.Errorf("netnsutil: cannot determine host network namespace: %w", err))
		}
	}
	return s, errors.Join(errs...)
}

// statIno returns the inode of the (followed) file at path.
func statIno(path string) (Inode, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Ino > 0xFFFFFFFF {
		return 0, fmt.Errorf("netnsutil: %s: inode %d out of range for a namespace", path, st.Ino)
	}
	return Inode(st.Ino), nil
}

// statNsfs is statIno that also requires path to live on nsfs.
func statNsfs(path string) (Inode, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(path, &sfs); err != nil {
		return 0, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	if uint64(sfs.Type) != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("netnsutil: %s is not a namespace file (not on nsfs)", path)
	}
	return statIno(path)
}
