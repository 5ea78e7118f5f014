package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

func scrape(t *testing.T, m *Metrics) string {
	t.Helper()
	w := httptest.NewRecorder()
	m.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	b, _ := io.ReadAll(w.Result().Body)
	return string(b)
}

func TestForgetVanishedNamespaces(t *testing.T) {
	m := New()
	for _, ns := range []string{"pod-1", "pod-2", "host"} {
		m.Observe(OutcomeOf(&journey.Journey{Verdict: journey.Verdict{Kind: journey.Dropped, Reason: "NETFILTER_DROP", Netns: ns}}))
		m.Suppressed("NETFILTER_DROP", ns)
	}
	if out := scrape(t, m); strings.Count(out, `skbtrail_drops_total{netns=`) != 3 {
		t.Fatalf("want 3 drop series:\n%s", out)
	}
	if n := m.Forget(func(ns string) bool { return ns == "host" }); n != 2 {
		t.Errorf("forgot %d namespaces, want 2", n)
	}
	out := scrape(t, m)
	if strings.Contains(out, `netns="pod-1"`) || strings.Contains(out, `netns="pod-2"`) {
		t.Errorf("series of vanished namespaces remain:\n%s", out)
	}
	if !strings.Contains(out, `skbtrail_drops_total{netns="host",reason="NETFILTER_DROP"} 1`) ||
		!strings.Contains(out, `skbtrail_events_suppressed_total{netns="host",reason="NETFILTER_DROP"} 1`) {
		t.Errorf("the live namespace's series went too:\n%s", out)
	}
	if n := m.Forget(func(string) bool { return true }); n != 0 {
		t.Errorf("forgot %d with everything live", n)
	}
}

// Pod series: one per (pod, reason), bounded, and deleted when the pod goes.
func TestPodSeriesBoundedAndForgotten(t *testing.T) {
	m := New()
	m.maxPodSers = 3
	drop := func(pod, reason string) Outcome {
		return Outcome{Verdict: journey.Dropped, Reason: reason, Netns: "host", Pod: pod}
	}
	m.Observe(drop("default/web", "NETFILTER_DROP"))
	m.Observe(drop("default/web", "NETFILTER_DROP"))
	m.Observe(drop("default/web", "NO_SOCKET"))
	m.Observe(drop("kube-system/coredns", "NETFILTER_DROP"))
	m.Observe(drop("default/db", "NETFILTER_DROP")) // a fourth series: over the bound
	m.Observe(drop("", "IP_INNOROUTES"))            // no pod: no pod series
	m.Observe(Outcome{Verdict: journey.Delivered, Netns: "host", Pod: "default/web"})
	out := scrape(t, m)
	for _, want := range []string{
		`skbtrail_pod_drops_total{pod="web",pod_namespace="default",reason="NETFILTER_DROP"} 2`,
		`skbtrail_pod_drops_total{pod="web",pod_namespace="default",reason="NO_SOCKET"} 1`,
		`skbtrail_pod_drops_total{pod="coredns",pod_namespace="kube-system",reason="NETFILTER_DROP"} 1`,
		`skbtrail_pod_series_capped_total 1`,
		`skbtrail_drops_total{netns="host",reason="NETFILTER_DROP"} 4`,
		`skbtrail_drops_total{netns="host",reason="IP_INNOROUTES"} 1`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %s in:\n%s", want, out)
		}
	}
	if strings.Contains(out, `pod="db"`) {
		t.Errorf("a series past the bound:\n%s", out)
	}
	if n := m.ForgetPods(func(pod string) bool { return pod == "kube-system/coredns" }); n != 1 {
		t.Errorf("forgot %d pods, want 1", n)
	}
	out = scrape(t, m)
	if strings.Contains(out, `pod="web"`) || !strings.Contains(out, `pod="coredns"`) {
		t.Errorf("after forgetting default/web:\n%s", out)
	}
	// the bound counts live series: room again for the new pod
	m.Observe(drop("default/db", "NETFILTER_DROP"))
	if out := scrape(t, m); !strings.Contains(out, `skbtrail_pod_drops_total{pod="db",pod_namespace="default",reason="NETFILTER_DROP"} 1`) {
		t.Errorf("no series after room was freed:\n%s", out)
	}
}
