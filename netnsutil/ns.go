//go:build linux

package netnsutil

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// ErrNotFound is matched (errors.Is) by the error ResolveName returns when a
// named network namespace does not exist.
var ErrNotFound = errors.New("network namespace not found")

type notFoundError struct{ name string }

func (e *notFoundError) Error() string {
	return fmt.Sprintf("network namespace %q not found (see ip netns list)", e.name)
}

func (e *notFoundError) Is(target error) bool { return target == ErrNotFound }

// InodeOf returns the inode of the network namespace file at path (for
// example /run/netns/NAME or /proc/PID/ns/net). It fails if path is not an
// nsfs file or refers to a namespace of another type.
func InodeOf(path string) (Inode, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	defer unix.Close(fd)

	var sfs unix.Statfs_t
	if err := unix.Fstatfs(fd, &sfs); err != nil {
		return 0, &fs.PathError{Op: "statfs", Path: path, Err: err}
	}
	if uint64(sfs.Type) != unix.NSFS_MAGIC {
		return 0, fmt.Errorf("netnsutil: %s is not a namespace file (not on nsfs)", path)
	}
	// NS_GET_NSTYPE exists since Linux 4.11; skip the check on ENOTTY.
	typ, err := unix.IoctlRetInt(fd, unix.NS_GET_NSTYPE)
	if err == nil && typ != unix.CLONE_NEWNET {
		return 0, fmt.Errorf("netnsutil: %s is not a network namespace", path)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0, &fs.PathError{Op: "stat", Path: path, Err: err}
	}
	if st.Ino > 0xFFFFFFFF {
		return 0, fmt.Errorf("netnsutil: %s: inode %d out of range for a namespace", path, st.Ino)
	}
	return Inode(st.Ino), nil
}

// ResolveName turns a user supplied namespace name into a path and inode:
//
//   - "host"  -> /proc/1/ns/net (if PID 1 is not accessible, the path of
//     another process in the initial namespace is returned);
//   - "pid:N" -> /proc/N/ns/net;
//   - "ino:N" -> the namespace with inode N: /run/netns/ino:N if that is
//     it, else the bind mount or process that Registry finds for it, so
//     every name printed by Registry.Name that still refers to an openable
//     namespace resolves;
//   - anything else -> /run/netns/NAME (as created by `ip netns add`).
//
// A missing namespace yields an error matching ErrNotFound whose message is
// `network namespace "NAME" not found (see ip netns list)`.
func ResolveName(name string) (path string, ino Inode, err error) {
	return resolver{procDir: defaultProcDir, netnsDir: defaultNetnsDir}.resolve(name)
}

// nameRef is what a namespace name refers to, read the way ResolveName
// reads it.
type nameRef struct {
	kind nameKind
	// n is the pid of a refPid; for a refNamed of the form "ino:N", N
	// (the inode to look for when no such name is bind-mounted).
	n uint64
}

type nameKind int

const (
	refNamed nameKind = iota // /run/netns/NAME
	refHost                  // "host"
	refPid                   // "pid:N"
)

// nameMax is the longest file name (NAME_MAX), so the longest name a
// bind mount under /run/netns can have.
const nameMax = 255

// parseName reads a namespace name, or says why it is none. It touches
// nothing.
func parseName(name string) (nameRef, error) {
	if name == "host" {
		return nameRef{kind: refHost}, nil
	}
	if rest, ok := strings.CutPrefix(name, "pid:"); ok {
		if pid, err := strconv.ParseUint(rest, 10, 31); err == nil && pid > 0 {
			return nameRef{kind: refPid, n: pid}, nil
		}
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > nameMax {
		return nameRef{}, fmt.Errorf("invalid network namespace name %q", name)
	}
	ref := nameRef{kind: refNamed}
	if rest, ok := strings.CutPrefix(name, "ino:"); ok {
		if n, err := strconv.ParseUint(rest, 10, 32); err == nil && n > 0 {
			ref.n = n
		}
	}
	return ref, nil
}

// resolver resolves names against a proc and a netns directory (/proc and
// /run/netns; others in tests). It only opens, stats and lists.
type resolver struct{ procDir, netnsDir string }

func (rv resolver) registry() *Registry {
	r := NewRegistry()
	r.procDir, r.netnsDir = rv.procDir, rv.netnsDir
	_ = r.Refresh()
	return r
}

func (rv resolver) resolve(name string) (path string, ino Inode, err error) {
	ref, err := parseName(name)
	if err != nil {
		return "", 0, err
	}
	switch ref.kind {
	case refHost:
		return rv.host()
	case refPid:
		return resolvePath(name, procNetPath(rv.procDir, int(ref.n)))
	}
	path, ino, err = resolvePath(name, filepath.Join(rv.netnsDir, name))
	if want := Inode(ref.n); want != 0 && (errors.Is(err, ErrNotFound) || (err == nil && ino != want)) {
		// "ino:N" is namespace N, whatever is bind-mounted under that name
		if p, ok := rv.registry().Path(want); ok {
			if got, err := InodeOf(p); err == nil && got == want {
				return p, got, nil
			}
		}
		return "", 0, &notFoundError{name: name}
	}
	return path, ino, err
}

func resolvePath(name, path string) (string, Inode, error) {
	ino, err := InodeOf(path)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH) {
			return "", 0, &notFoundError{name: name}
		}
		return "", 0, fmt.Errorf("network namespace %q: %w", name, err)
	}
	return path, ino, nil
}

func (rv resolver) host() (string, Inode, error) {
	path := procNetPath(rv.procDir, 1)
	ino, err := InodeOf(path)
	if err == nil {
		return path, ino, nil
	}
	// PID 1 is not accessible: find another process in the host netns.
	r := rv.registry()
	if h := r.Host(); h != 0 {
		if p, ok := r.Path(h); ok {
			if got, err2 := InodeOf(p); err2 == nil && got == h {
				return p, h, nil
			}
		}
	}
	return "", 0, fmt.Errorf("network namespace \"host\": %w", err)
}

// Do runs fn with the calling context's network namespace switched to the
// one at path. fn runs on a fresh goroutine locked to its OS thread; Do
// waits for it and returns fn's error. Other goroutines, including any that
// fn starts, are not affected and keep running in their own namespace.
//
// After fn returns, the thread is moved back to its original namespace and
// unlocked only if that succeeded; otherwise it stays locked and the Go
// runtime terminates it when the goroutine exits, so a thread in the wrong
// namespace is never reused. fn must not call runtime.UnlockOSThread. A
// panic in fn is re-raised in the caller of Do.
func Do(path string, fn func() error) error {
	type result struct {
		err      error
		panicked bool
		panicVal any
	}
	done := make(chan result, 1)
	go func() {
		res := result{err: errors.New("netnsutil: function exited without returning (runtime.Goexit)")}
		defer func() { done <- res }()

		target, err := netns.GetFromPath(path)
		if err != nil {
			res.err = fmt.Errorf("netnsutil: open network namespace %s: %w", path, err)
			return
		}
		defer target.Close()

		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netnsutil: get current network namespace: %w", err)
			return
		}
		defer orig.Close()

		if err := netns.Set(target); err != nil {
			// setns failed, so the thread is still in its original netns.
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netnsutil: enter network namespace %s: %w", path, err)
			return
		}

		func() {
			defer func() {
				if p := recover(); p != nil {
					res.panicked, res.panicVal = true, p
					res.err = nil
				}
			}()
			res.err = fn()
		}()

		if err := netns.Set(orig); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			res.err = errors.Join(res.err, fmt.Errorf("netnsutil: restore network namespace after %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
	}()
	res := <-done
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}

// NewHandle returns a netlink handle whose sockets live in the network
// namespace at path: for the given netlink families, or all the families
// the netlink package supports by default (route, xfrm, netfilter) if none
// are given. Ask for unix.NETLINK_INET_DIAG to list sockets: a handle
// without a family's socket makes its requests from the caller's own
// namespace. The calling goroutine's thread is never switched: the handle
// is created with netlink.NewHandleAt on a separate, locked goroutine whose
// thread is only released if it is verifiably back in its original
// namespace. The caller must Close the handle.
func NewHandle(path string, families ...int) (*netlink.Handle, error) {
	return newHandle(path, 0, families...)
}

// errStaleNsPath reports that a path no longer opens the expected namespace
// (e.g. a /proc/PID whose process exited and whose pid was reused).
var errStaleNsPath = errors.New("netnsutil: namespace path is stale")

// newHandle is NewHandle restricted to the given netlink families (all
// supported ones if none). If want is not 0, the namespace at path must have
// that inode (errStaleNsPath otherwise).
func newHandle(path string, want Inode, families ...int) (*netlink.Handle, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("netnsutil: open network namespace %s: %w", path, err)
	}
	// The sockets stay bound to the namespace; the fd is not needed after
	// the handle is created.
	defer ns.Close()

	if want != 0 {
		var st unix.Stat_t
		if err := unix.Fstat(int(ns), &st); err != nil {
			return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
		}
		if st.Ino != uint64(want) {
			return nil, errStaleNsPath
		}
	}

	type result struct {
		h   *netlink.Handle
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			done <- result{err: fmt.Errorf("netnsutil: get current network namespace: %w", err)}
			return
		}
		defer orig.Close()

		h, err := netlink.NewHandleAt(ns, families...)
		if err != nil {
			err = fmt.Errorf("netnsutil: netlink handle in %s: %w", path, err)
		}
		// netlink moves the thread back itself but ignores failures;
		// make sure, and keep the thread locked (to die) if that fails.
		if rerr := netns.Set(orig); rerr != nil {
			if h != nil {
				h.Close()
			}
			done <- result{err: errors.Join(err, fmt.Errorf("netnsutil: restore network namespace after %s: %w", path, rerr))}
			return
		}
		runtime.UnlockOSThread()
		done <- result{h: h, err: err}
	}()
	res := <-done
	if res.err != nil {
		return nil, res.err
	}
	return res.h, nil
}
