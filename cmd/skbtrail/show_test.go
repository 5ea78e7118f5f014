package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/output"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

func savedJourney(t testing.TB) []byte {
	j := journey.Journey{
		Packet:  journey.Packet{Proto: "tcp", Src: "10.244.0.5", Sport: 40000, Dst: "10.96.0.100", Dport: 80, TCPFlags: "SYN"},
		Verdict: journey.Verdict{Kind: journey.Dropped, Netns: "node-b", Device: "flannel.1", Reason: "NETFILTER_DROP", Hook: "FORWARD", Table: "filter", Chain: "FORWARD", Rule: "policy DROP"},
		Hops:    []journey.Hop{{TUs: 0, Netns: "pod-a", Device: "eth0", Event: "tx"}},
		Findings: []journey.Finding{{Code: "NF_POLICY_DROP", Severity: journey.SeverityError, Message: "filter/FORWARD policy DROP dropped it",
			Advice: "allow forwarding"}},
	}
	j.Normalize()
	b, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestShow(t *testing.T) {
	line := savedJourney(t)
	msg := append(append([]byte(`{"journey":`), line...), '}')
	in := strings.Join([]string{string(line), "", "not json", `{"schema":"other/v9"}`, string(msg)}, "\n")
	path := filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.WriteFile(path, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := runShow([]string{path}, nil, &out, &errOut)
	if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), "2 of 4 lines were not journeys") {
		t.Errorf("err %v, want exit 2 counting the bad lines", err)
	}
	if n := strings.Count(out.String(), "verdict: DROPPED in node-b at flannel.1: NETFILTER_DROP (filter/FORWARD, policy DROP)"); n != 2 {
		t.Errorf("%d journeys rendered, want 2:\n%s", n, out.String())
	}
	for _, want := range []string{"line 3: not JSON", `line 4: schema "other/v9"`} {
		if !strings.Contains(errOut.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, errOut.String())
		}
	}
	out.Reset()
	if err := runShow([]string{"-"}, bytes.NewReader(line), &out, &errOut); err != nil || !strings.Contains(out.String(), "ERROR NF_POLICY_DROP") {
		t.Errorf("stdin: %v\n%s", err, out.String())
	}
	if err := runShow([]string{"/nonexistent/file"}, nil, &out, &errOut); exitcode.Of(err) != exitcode.Usage {
		t.Errorf("missing file: %v", err)
	}
	if err := runShow(nil, nil, &out, &errOut); exitcode.Of(err) != exitcode.Usage {
		t.Errorf("no file: %v", err)
	}
}

func FuzzShowLine(f *testing.F) {
	f.Add(savedJourney(f))
	f.Add([]byte(`{"journey":{"schema":"skbtrail.journey/v1","hops":[{}]}}`))
	f.Add([]byte(`{"schema":"skbtrail.journey/v1","verdict":{"kind":"left"},"nodes":[{"name":"a"}]}`))
	f.Fuzz(func(t *testing.T, line []byte) {
		j, err := parseJourney(line)
		if err != nil {
			return
		}
		if j.Schema != journey.Schema || j.Hops == nil || j.Findings == nil {
			t.Fatalf("parsed journey not normalized: %+v", j)
		}
		var b bytes.Buffer
		if err := output.NewText(&b).Write(j); err != nil {
			t.Fatal(err)
		}
	})
}
