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
		m.Journey(&journey.Journey{Verdict: journey.Verdict{Kind: journey.Dropped, Reason: "NETFILTER_DROP", Netns: ns}})
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
