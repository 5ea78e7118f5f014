//go:build linux

package netnsutil

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// Links caches interface names per network namespace (ifindex -> name), so
// that events carrying only (netns inode, ifindex) can be named. It is safe
// for concurrent use.
type Links struct {
	reg *Registry

	mu sync.Mutex
	ns map[Inode]*nsLinks

	fetches atomic.Uint64 // number of link dumps attempted, for tests
}

type nsLinks struct {
	fetchMu   sync.Mutex // serializes dumps; guards lastFetch
	lastFetch time.Time

	mu    sync.RWMutex
	names map[uint32]string
}

// NewLinks returns an empty cache that finds namespaces through r.
func NewLinks(r *Registry) *Links {
	return &Links{reg: r, ns: map[Inode]*nsLinks{}}
}

// Name returns the name of interface ifindex in the network namespace ino.
// Names are cached; on a miss the namespace's links are listed again over
// netlink (at most once per 200ms per namespace). "if<N>" is returned when
// the interface (or the namespace) is unknown.
func (l *Links) Name(ino Inode, ifindex uint32) string {
	if ifindex == 0 {
		return ifName(ifindex)
	}
	n := l.nsFor(ino)
	if name, ok := n.lookup(ifindex); ok {
		return name
	}

	n.fetchMu.Lock()
	defer n.fetchMu.Unlock()
	if name, ok := n.lookup(ifindex); ok {
		return name // fetched by someone else meanwhile
	}
	if !n.lastFetch.IsZero() && time.Since(n.lastFetch) < missRefreshInterval {
		return ifName(ifindex)
	}
	l.fetch(ino, n)
	n.lastFetch = time.Now()
	if name, ok := n.lookup(ifindex); ok {
		return name
	}
	return ifName(ifindex)
}

func (l *Links) nsFor(ino Inode) *nsLinks {
	l.mu.Lock()
	defer l.mu.Unlock()
	n, ok := l.ns[ino]
	if !ok {
		n = &nsLinks{names: map[uint32]string{}}
		l.ns[ino] = n
	}
	return n
}

func (n *nsLinks) lookup(ifindex uint32) (string, bool) {
	n.mu.RLock()
	defer n.mu.RUnlock()
	name, ok := n.names[ifindex]
	return name, ok
}

// fetch lists the links of namespace ino and updates n. Called with
// n.fetchMu held.
func (l *Links) fetch(ino Inode, n *nsLinks) {
	l.fetches.Add(1)
	h, err := l.handle(ino)
	if err != nil {
		return
	}
	defer h.Close()
	links, err := h.LinkList()
	interrupted := errors.Is(err, netlink.ErrDumpInterrupted)
	if err != nil && !interrupted {
		return
	}
	names := make(map[uint32]string, len(links))
	for _, lk := range links {
		a := lk.Attrs()
		if a == nil || a.Index <= 0 {
			continue
		}
		names[uint32(a.Index)] = a.Name
	}
	n.mu.Lock()
	if interrupted {
		// Possibly incomplete: merge instead of replacing.
		for idx, name := range names {
			n.names[idx] = name
		}
	} else {
		n.names = names
	}
	n.mu.Unlock()
}

// handle returns a NETLINK_ROUTE handle in namespace ino, making sure the
// registry's path still refers to that namespace.
func (l *Links) handle(ino Inode) (*netlink.Handle, error) {
	path, ok := l.reg.Path(ino)
	if !ok {
		return nil, errStaleNsPath
	}
	h, err := newHandle(path, ino, unix.NETLINK_ROUTE)
	if errors.Is(err, errStaleNsPath) {
		// The registry is out of date (e.g. pid reuse): rescan and retry.
		l.reg.refreshRateLimited()
		if path, ok = l.reg.Path(ino); !ok {
			return nil, errStaleNsPath
		}
		h, err = newHandle(path, ino, unix.NETLINK_ROUTE)
	}
	return h, err
}

func ifName(ifindex uint32) string { return "if" + strconv.FormatUint(uint64(ifindex), 10) }
