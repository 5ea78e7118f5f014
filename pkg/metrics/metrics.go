// Package metrics exports skbtrail's counters for Prometheus.
package metrics

import (
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// MaxPodSeries bounds skbtrail_pod_drops_total: one series per (pod,
// drop reason). A node runs at most a few hundred pods (kubelet's
// max-pods, 110 by default) and a pod's drops have a handful of reasons,
// so the bound is reached only by a node far outside that; past it a drop
// is still counted in skbtrail_drops_total, and
// skbtrail_pod_series_capped_total counts what found no series.
const MaxPodSeries = 2048

// Metrics are the daemon's counters.
type Metrics struct {
	reg        *prometheus.Registry
	drops      *prometheus.CounterVec
	podDrops   *prometheus.CounterVec
	podCapped  prometheus.Counter
	lost       prometheus.Counter
	journeys   *prometheus.CounterVec
	suppressed *prometheus.CounterVec

	mu         sync.Mutex
	netns      map[string]struct{}            // netns label values in use (see Forget)
	pods       map[string]map[string]struct{} // pod ("namespace/name") -> reasons with a series
	nPodSeries int
	maxPodSers int
}

// Outcome is what the metrics count of one finished journey. It is a copy
// taken on the processor (OutcomeOf: nothing shared with the journey), then
// named and charged to a pod where waiting is fine (the daemon's metrics
// goroutine).
type Outcome struct {
	Verdict, Reason string
	// Netns is where the journey ended ("ino:<n>" until named); NetnsInode
	// the same namespace's inode.
	Netns      string
	NetnsInode uint32
	// Src and Dst are the packet's addresses.
	Src, Dst string
	// Pod is the pod ("namespace/name") a drop is charged to: the pod the
	// packet was dropped in, else the pod that sent it, else the pod it was
	// sent to; "" when no pod is involved.
	Pod string
}

// OutcomeOf takes what the metrics count of j.
func OutcomeOf(j *journey.Journey) Outcome {
	return Outcome{
		Verdict: j.Verdict.Kind, Reason: j.Verdict.Reason,
		Netns: j.Verdict.Netns, NetnsInode: j.Verdict.NetnsInode,
		Src: j.Packet.Src, Dst: j.Packet.Dst,
	}
}

func (o Outcome) dropped() bool {
	return o.Verdict == journey.Dropped || o.Verdict == journey.Rejected
}

// New registers the counters and the usual process and Go metrics.
func New() *Metrics {
	m := &Metrics{
		reg:        prometheus.NewRegistry(),
		netns:      map[string]struct{}{},
		pods:       map[string]map[string]struct{}{},
		maxPodSers: MaxPodSeries,
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skbtrail_drops_total", Help: "Packets the kernel dropped, by drop reason and network namespace.",
		}, []string{"reason", "netns"}),
		podDrops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skbtrail_pod_drops_total",
			Help: "Packets the kernel dropped, by drop reason and the pod charged: the pod the packet was dropped in, else the pod that sent it, else the pod it was sent to. At most one series per (pod, reason) of the pods on this node, deleted when the pod goes.",
		}, []string{"reason", "pod_namespace", "pod"}),
		podCapped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skbtrail_pod_series_capped_total",
			Help: "Pod drops not given a skbtrail_pod_drops_total series because the series bound was reached (still counted in skbtrail_drops_total).",
		}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "skbtrail_events_lost_total", Help: "Trace events lost before reaching skbtrail (ring buffer or channel full).",
		}),
		journeys: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skbtrail_journeys_total", Help: "Finished journeys by verdict.",
		}, []string{"verdict"}),
		suppressed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skbtrail_events_suppressed_total", Help: "Drop events not written to the event stream because of rate limiting.",
		}, []string{"reason", "netns"}),
	}
	m.reg.MustRegister(m.drops, m.podDrops, m.podCapped, m.lost, m.journeys, m.suppressed,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return m
}

// Observe counts one finished journey.
func (m *Metrics) Observe(o Outcome) {
	m.journeys.WithLabelValues(o.Verdict).Inc()
	if !o.dropped() {
		return
	}
	m.drops.WithLabelValues(o.Reason, o.Netns).Inc()
	m.note(o.Netns)
	if o.Pod != "" && m.claimPodSeries(o.Pod, o.Reason) {
		ns, name, _ := strings.Cut(o.Pod, "/")
		m.podDrops.WithLabelValues(o.Reason, ns, name).Inc()
	}
}

// claimPodSeries reports whether (pod, reason) has a series, making one while
// the bound allows; a refusal is counted.
func (m *Metrics) claimPodSeries(pod, reason string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.pods[pod][reason]; ok {
		return true
	}
	if m.nPodSeries >= m.maxPodSers {
		m.podCapped.Inc()
		return false
	}
	if m.pods[pod] == nil {
		m.pods[pod] = map[string]struct{}{}
	}
	m.pods[pod][reason] = struct{}{}
	m.nPodSeries++
	return true
}

// ForgetPods deletes the series of every pod live does not name (it is
// gone from the node). It returns how many pods it forgot.
func (m *Metrics) ForgetPods(live func(pod string) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for pod, reasons := range m.pods {
		if live(pod) {
			continue
		}
		ns, name, _ := strings.Cut(pod, "/")
		m.podDrops.DeletePartialMatch(prometheus.Labels{"pod_namespace": ns, "pod": name})
		m.nPodSeries -= len(reasons)
		delete(m.pods, pod)
		n++
	}
	return n
}

func (m *Metrics) note(netns string) {
	m.mu.Lock()
	m.netns[netns] = struct{}{}
	m.mu.Unlock()
}

// Forget deletes the series of every namespace live does not name (it
// vanished: pods come and go by the thousand over a daemon's life, and a
// series per namespace that ever dropped a packet would grow without
// bound). It returns how many namespaces it forgot.
func (m *Metrics) Forget(live func(netns string) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for ns := range m.netns {
		if live(ns) {
			continue
		}
		m.drops.DeletePartialMatch(prometheus.Labels{"netns": ns})
		m.suppressed.DeletePartialMatch(prometheus.Labels{"netns": ns})
		delete(m.netns, ns)
		n++
	}
	return n
}

// Lost counts lost events.
func (m *Metrics) Lost(n uint64) { m.lost.Add(float64(n)) }

// Suppressed counts a rate-limited event.
func (m *Metrics) Suppressed(reason, netns string) {
	m.suppressed.WithLabelValues(reason, netns).Inc()
	m.note(netns)
}

// CounterFunc exports a counter read when scraped (loss counters kept
// elsewhere).
func (m *Metrics) CounterFunc(name, help string, read func() uint64) {
	m.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
		func() float64 { return float64(read()) }))
}

// Handler serves /metrics.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}
