package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/wire"
)

// Options describe one cluster trace.
type Options struct {
	Probe       bool
	Timeout     time.Duration
	ServiceCIDR string
	// Progress is told what is going on (one line each, stderr).
	Progress func(format string, args ...any)
}

// nodeRun is one node's trace: what it was asked and what came back.
type nodeRun struct {
	node   string
	daemon Daemon
	req    wire.Request
	mu     sync.Mutex // parts: appended by run, read by Run
	parts  []*Part
	err    error
	// arrived is told (without blocking) when a part comes in
	arrived chan<- struct{}
	ready   chan struct{}
	once    sync.Once
	doneCh  chan struct{}
}

func (r *nodeRun) markReady() { r.once.Do(func() { close(r.ready) }) }

// Requests returns what each node on the path is asked: the source node
// traces from the pod's namespace toward the target; every other node
// traces the packet as it arrives (after the source node's NAT).
func (p *Plan) Requests(o Options) map[string]wire.Request {
	base := wire.Request{Proto: p.Proto, Timeout: o.Timeout, Count: 1, ServiceCIDR: o.ServiceCIDR, NodeAddrs: map[string]string{}}
	for a, n := range p.NodeAddrs {
		base.NodeAddrs[a.String()] = n
	}
	if p.Proto == "tcp" {
		base.SYN = true
	}
	src := base
	src.FromIP, src.Src, src.To, src.Probe = p.PodIP.String(), p.PodIP.String(), p.Dst.String(), o.Probe
	out := map[string]wire.Request{p.Node: src}
	for _, n := range p.Nodes[1:] {
		r := base
		r.Src, r.Arriving = p.PodIP.String(), true
		if o.Probe {
			// the probe's one packet must meet the observers where it
			// arrives (its pod's INPUT tells delivery to a socket)
			r.Netfilter = "all"
		}
		r.Timeout += 2 * time.Second // it starts before the source node's trace
		var eps []Endpoint
		for _, e := range p.Endpoints {
			if e.Node == n {
				eps = append(eps, e)
			}
		}
		if len(eps) == 1 {
			r.Dst = eps[0].IP.String()
		}
		if len(eps) > 0 && eps[0].Port != 0 && allPorts(eps, eps[0].Port) {
			r.Dport = eps[0].Port
		}
		out[n] = r
	}
	return out
}

func allPorts(eps []Endpoint, port uint16) bool {
	for _, e := range eps {
		if e.Port != port {
			return false
		}
	}
	return true
}

// Run traces the plan on every node's daemon and returns the journey.
func Run(ctx context.Context, c Caller, p *Plan, daemons map[string]Daemon, o Options) (*journey.Journey, error) {
	progress := o.Progress
	if progress == nil {
		progress = func(string, ...any) {}
	}
	reqs := p.Requests(o)
	runs := map[string]*nodeRun{}
	arrived := make(chan struct{}, 1)
	for _, n := range p.Nodes {
		runs[n] = &nodeRun{node: n, req: reqs[n], ready: make(chan struct{}), doneCh: make(chan struct{}), arrived: arrived}
	}
	// the other nodes first: their filters must be in place before the
	// source node's probe (or the user's traffic) leaves
	destCtx, stopDest := context.WithCancel(ctx)
	defer stopDest()
	var dests []*nodeRun
	for _, n := range p.Nodes[1:] {
		dests = append(dests, runs[n])
		go runs[n].run(destCtx, ctx, c, daemons, progress)
	}
	if err := waitReady(ctx, runs, p.Nodes[1:], o.Timeout+5*time.Second); err != nil {
		return nil, err
	}
	src := runs[p.Node]
	go src.run(ctx, ctx, c, daemons, progress)
	<-src.ready
	if src.err != nil && !IsUnobserved(src.err) {
		return nil, src.err
	}
	progress("tracing %s %s -> %s on %s", p.Proto, p.Pod, p.targetText(), strings.Join(p.Nodes, ", "))
	<-src.doneCh
	waitContinuation(ctx, src, dests, arrived)
	stopDest() // the journey is complete: the nodes that saw nothing need not wait for their timeout
	for _, r := range runs {
		<-r.doneCh
	}
	for _, r := range runs {
		if r.err != nil && !IsUnobserved(r.err) {
			return nil, r.err
		}
	}
	return assemble(p, runs)
}

// waitContinuation waits, once the source node's part is in, until another
// node's part continues it or every other node's trace has ended.
func waitContinuation(ctx context.Context, src *nodeRun, dests []*nodeRun, arrived <-chan struct{}) {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		first := src.firstPart()
		done := true
		for _, d := range dests {
			if first != nil && d.continues(first.Journey) {
				return
			}
			select {
			case <-d.doneCh:
			default:
				done = false
			}
		}
		if done {
			return
		}
		select {
		case <-arrived:
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func (p *Plan) targetText() string {
	if p.Service != "" {
		return fmt.Sprintf("Service %s (%s)", p.Service, p.Dst)
	}
	return p.Dst.String()
}

// waitReady waits until the listed nodes have their filters in place (or
// failed); a user error (RBAC, a bad request) ends the trace.
func waitReady(ctx context.Context, runs map[string]*nodeRun, nodes []string, limit time.Duration) error {
	deadline := time.After(limit)
	for _, n := range nodes {
		r := runs[n]
		select {
		case <-r.ready:
		case <-deadline:
			return fmt.Errorf("node %s: the daemon did not start tracing within %s", n, limit)
		case <-ctx.Done():
			return ctx.Err()
		}
		if r.err != nil && !IsUnobserved(r.err) {
			return r.err
		}
	}
	return nil
}

// run asks the node's daemon; ctx may end early (the journey is complete:
// not an error), parent is the whole trace's.
func (r *nodeRun) run(ctx, parent context.Context, c Caller, daemons map[string]Daemon, progress func(string, ...any)) {
	defer close(r.doneCh)
	defer r.markReady()
	d, ok := daemons[r.node]
	switch {
	case !ok:
		r.err = &errDaemon{why: "no skbtrail daemon pod runs on it"}
		return
	case d.Phase != "Running":
		r.err = &errDaemon{why: fmt.Sprintf("its daemon pod %s/%s is %s", d.Namespace, d.Pod, orUnknown(d.Phase))}
		return
	}
	r.daemon = d
	_, err := c.Trace(ctx, d, r.req, func(line string) {
		if strings.HasPrefix(line, "tracing") {
			progress("%s: %s", r.node, line)
			r.markReady()
		}
	}, func(m wire.Message) error {
		r.mu.Lock()
		r.parts = append(r.parts, &Part{Node: r.node, Journey: m.Journey, Start: m.Start})
		r.mu.Unlock()
		select {
		case r.arrived <- struct{}{}:
		default:
		}
		return nil
	})
	if err != nil && ctx.Err() != nil && parent.Err() == nil {
		err = nil // stopped because the journey was complete: it was asked and answered
	}
	r.err = err
}

func (r *nodeRun) firstPart() *Part {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.parts) == 0 {
		return nil
	}
	return r.parts[0]
}

// continues reports whether one of the node's parts continues j.
func (r *nodeRun) continues(j *journey.Journey) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.parts {
		if Continues(j, p.Journey) {
			return true
		}
	}
	return false
}

// assemble stitches the nodes' parts into one journey.
func assemble(p *Plan, runs map[string]*nodeRun) (*journey.Journey, error) {
	var nodes []journey.NodeObserved
	var next []*Part
	for _, n := range p.Nodes {
		r := runs[n]
		o := journey.NodeObserved{Name: n, Observed: r.err == nil}
		if r.err != nil {
			o.Why = r.err.Error()
		}
		nodes = append(nodes, o)
		if n != p.Node {
			next = append(next, r.parts...)
		}
	}
	src := runs[p.Node]
	var j *journey.Journey
	var used *Part
	switch {
	case len(src.parts) > 0:
		j, used = Stitch(src.parts[0], next)
	case len(next) > 0:
		// the source node said nothing (unobserved): what the others saw
		sort.SliceStable(next, func(a, b int) bool { return next[a].Start < next[b].Start })
		used = next[0]
		j = used.Journey
		label(j, used.Node)
	default:
		return nil, nil
	}
	j.Nodes = append(nodes, p.unasked(j)...)
	if used == nil && len(src.parts) > 0 {
		p.notContinued(j, runs)
	}
	Diagnose(j, p)
	j.Normalize()
	return j, nil
}

// unasked lists the node a packet that left went to when the plan did not
// name it (an IP target behind which the API knows no pod or Service, say):
// it is on the path and was not observed.
func (p *Plan) unasked(j *journey.Journey) []journey.NodeObserved {
	if j.Verdict.Kind != journey.Left {
		return nil
	}
	to, _ := j.Toward()
	host := to
	if ap, err := netip.ParseAddrPort(to); err == nil {
		host = ap.Addr().String()
	}
	a, err := netip.ParseAddr(host)
	owner := p.NodeAddrs[a]
	if err != nil || owner == "" || slices.Contains(p.Nodes, owner) {
		return nil
	}
	return []journey.NodeObserved{{Name: owner, Why: fmt.Sprintf("the packet went to %s, an address of node %s, which the target did not lead to, so its daemon was not asked", a, owner)}}
}

// notContinued: the packet left the source node toward nodes whose daemons
// were asked and saw nothing of it.
func (p *Plan) notContinued(j *journey.Journey, runs map[string]*nodeRun) {
	if j.Verdict.Kind != journey.Left {
		return
	}
	var silent []string
	for _, n := range p.Nodes[1:] {
		if runs[n].err == nil {
			silent = append(silent, n)
		}
	}
	if len(silent) == 0 {
		return
	}
	// transmitted and never seen again: lost between the nodes
	j.Verdict.Kind = journey.Lost
	for i := range j.Findings {
		if j.Findings[i].Code == CodeLeftNode {
			j.Findings[i].Message += fmt.Sprintf("; the daemon of %s saw nothing of it before the timeout", strings.Join(silent, ", "))
		}
	}
}
