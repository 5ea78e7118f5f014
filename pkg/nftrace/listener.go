package nftrace

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// keepDrops is how many drop events a Listener remembers (the newest).
const keepDrops = 256

// keepPackets bounds the trace ids whose packet a Listener remembers.
const keepPackets = 4096

// Listener receives the trace events of one network namespace
// (NFNLGRP_NFTRACE) and keeps the recent drops.
type Listener struct {
	conn *netlink.Conn
	done chan struct{}

	mu    sync.Mutex
	cond  *sync.Cond
	drops []Event // ring of the newest keepDrops drops
	next  int
	// pkts is the packet of each trace id: the kernel copies the headers
	// into the first event of a chain walk only.
	pkts map[uint32]walk

	// Events counts every trace event received, Forgotten the drops pushed
	// out of the ring, Lost the events the kernel could not deliver
	// (socket buffer full), Bad the messages that did not decode.
	Events, Forgotten, Lost, Bad atomic.Uint64
}

// Listen subscribes to the trace events of the network namespace netnsFD
// refers to.
func Listen(netnsFD int) (*Listener, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return nil, fmt.Errorf("netfilter netlink socket: %w", err)
	}
	if err := c.JoinGroup(unix.NFNLGRP_NFTRACE); err != nil {
		c.Close()
		return nil, fmt.Errorf("join the nftrace group: %w", err)
	}
	return listen(c), nil
}

// listen reads the trace events c (joined to the group) receives.
func listen(c *netlink.Conn) *Listener {
	_ = c.SetReadBuffer(1 << 20) // best effort: the default holds fewer bursts
	l := &Listener{conn: c, done: make(chan struct{}), pkts: map[uint32]walk{}}
	l.cond = sync.NewCond(&l.mu)
	go l.read()
	return l
}

// walk is what a trace id's first event of a chain walk said.
type walk struct {
	pkt  Tuple
	base string // the base chain the walk started in
}

func (l *Listener) read() {
	defer close(l.done)
	for {
		msgs, err := l.conn.Receive()
		if err != nil {
			var oe *netlink.OpError
			if errors.As(err, &oe) && errors.Is(oe.Err, unix.ENOBUFS) {
				l.Lost.Add(1)
				continue
			}
			l.mu.Lock()
			l.cond.Broadcast()
			l.mu.Unlock()
			return // closed
		}
		for _, m := range msgs {
			if !IsTrace(m.Header.Type) {
				continue
			}
			ev, err := Decode(m.Data)
			if err != nil {
				l.Bad.Add(1)
				continue
			}
			l.Events.Add(1)
			if tu, ok := ev.Tuple(); ok {
				if len(l.pkts) >= keepPackets {
					clear(l.pkts) // the walks in flight restart their entry at their next chain
				}
				l.pkts[ev.ID] = walk{tu, ev.Chain}
			}
			if ev.Drops() {
				if w, ok := l.pkts[ev.ID]; ok {
					ev.Packet, ev.HasPacket, ev.BaseChain = w.pkt, true, w.base
				}
				l.add(ev)
			}
		}
	}
}

func (l *Listener) add(ev Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.drops) < keepDrops {
		l.drops = append(l.drops, ev)
	} else {
		l.drops[l.next] = ev
		l.next = (l.next + 1) % keepDrops
		l.Forgotten.Add(1)
	}
	l.cond.Broadcast()
}

// FindDrop returns the newest drop whose packet matches (ok reports one),
// waiting up to wait for it to arrive: events come over a socket, and may
// trail the journey that the same drop ended.
func (l *Listener) FindDrop(match func(Event) bool, wait time.Duration) (Event, bool) {
	deadline := time.Now().Add(wait)
	timer := time.AfterFunc(wait, func() {
		l.mu.Lock()
		l.cond.Broadcast()
		l.mu.Unlock()
	})
	defer timer.Stop()
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		for i := len(l.drops) - 1; i >= 0; i-- {
			ev := l.drops[(l.next+i)%len(l.drops)]
			if match(ev) {
				return ev, true
			}
		}
		select {
		case <-l.done:
			return Event{}, false
		default:
		}
		if !time.Now().Before(deadline) {
			return Event{}, false
		}
		l.cond.Wait()
	}
}

// Close ends the subscription.
func (l *Listener) Close() error {
	err := l.conn.Close()
	<-l.done
	return err
}
