package events

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

func drop(netns, reason string) *journey.Journey {
	return &journey.Journey{Schema: journey.Schema, Verdict: journey.Verdict{Kind: journey.Dropped, Netns: netns, Reason: reason}}
}

func TestRateLimitPerKeyCountsSuppressed(t *testing.T) {
	var buf bytes.Buffer
	s := NewWriter(&buf, Limit{Rate: 1, Burst: 2})
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	var suppressed []string
	s.OnSuppressed = func(reason, netns string) { suppressed = append(suppressed, netns+"/"+reason) }
	for i := 0; i < 5; i++ {
		s.Write(drop("node-b", "NETFILTER_DROP"))
	}
	if ok, _ := s.Write(drop("node-a", "NO_SOCKET")); !ok {
		t.Error("another key was limited by node-b's bucket")
	}
	if len(suppressed) != 3 {
		t.Fatalf("suppressed %v, want 3 of node-b", suppressed)
	}
	now = now.Add(1500 * time.Millisecond) // one token back
	if ok, _ := s.Write(drop("node-b", "NETFILTER_DROP")); !ok {
		t.Fatal("refilled bucket still limited")
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("%d lines written, want 4:\n%s", len(lines), buf.String())
	}
	var last journey.Journey
	if err := json.Unmarshal([]byte(lines[3]), &last); err != nil {
		t.Fatal(err)
	}
	if last.Suppressed != 3 {
		t.Errorf("suppressed field %d, want 3 (the events left out before this one)", last.Suppressed)
	}
}

func TestReopenAfterRotate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.ndjson")
	s, err := Open(path, Limit{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.Write(drop("a", "X"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Reopen(); err != nil {
		t.Fatal(err)
	}
	s.Write(drop("b", "Y"))
	old, _ := os.ReadFile(path + ".1")
	cur, _ := os.ReadFile(path)
	if !strings.Contains(string(old), `"netns":"a"`) || !strings.Contains(string(cur), `"netns":"b"`) || strings.Contains(string(cur), `"netns":"a"`) {
		t.Errorf("rotated file %q, new file %q", old, cur)
	}
}

func TestForgetDropsBucketsOfVanishedNamespaces(t *testing.T) {
	s := NewWriter(&bytes.Buffer{}, Limit{Rate: 1, Burst: 1})
	for _, ns := range []string{"pod-1", "pod-2", "host"} {
		if _, err := s.Write(&journey.Journey{Verdict: journey.Verdict{Netns: ns, Reason: "NETFILTER_DROP"}}); err != nil {
			t.Fatal(err)
		}
	}
	s.Forget(func(ns string) bool { return ns == "host" })
	if len(s.buckets) != 1 {
		t.Fatalf("%d buckets left, want the live namespace's only", len(s.buckets))
	}
	// the live namespace keeps its state: its next event is still limited
	if ok, _ := s.Write(&journey.Journey{Verdict: journey.Verdict{Netns: "host", Reason: "NETFILTER_DROP"}}); ok {
		t.Error("host's bucket was reset")
	}
}
