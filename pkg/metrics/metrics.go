// Package metrics exports skbtrail's counters for Prometheus.
package metrics

import (
	"net/http"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// Metrics are the daemon's counters.
type Metrics struct {
	reg        *prometheus.Registry
	drops      *prometheus.CounterVec
	lost       prometheus.Counter
	journeys   *prometheus.CounterVec
	suppressed *prometheus.CounterVec

	mu    sync.Mutex
	netns map[string]struct{} // netns label values in use (see Forget)
}

// New registers the counters and the usual process and Go metrics.
func New() *Metrics {
	m := &Metrics{
		reg:   prometheus.NewRegistry(),
		netns: map[string]struct{}{},
		drops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "skbtrail_drops_total", Help: "Packets the kernel dropped, by drop reason and network namespace.",
		}, []string{"reason", "netns"}),
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
	m.reg.MustRegister(m.drops, m.lost, m.journeys, m.suppressed,
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), collectors.NewGoCollector())
	return m
}

// Journey counts one finished journey.
func (m *Metrics) Journey(j *journey.Journey) {
	m.journeys.WithLabelValues(j.Verdict.Kind).Inc()
	if j.Verdict.Kind == journey.Dropped || j.Verdict.Kind == journey.Rejected {
		m.drops.WithLabelValues(j.Verdict.Reason, j.Verdict.Netns).Inc()
		m.note(j.Verdict.Netns)
	}
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
