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

// TestShowArtifacts: show --svg and --pcapng from saved journeys: one SVG per
// journey (FILE, FILE-2.svg), and a pcapng with every frame of every journey.
func TestShowArtifacts(t *testing.T) {
	var j journey.Journey
	if err := json.Unmarshal(savedJourney(t), &j); err != nil {
		t.Fatal(err)
	}
	j.Frames = []journey.Frame{
		{Netns: "pod-a", Device: "eth0", Event: "tx", Link: journey.LinkIP, Len: 60, Data: []byte{0x45, 0, 0, 60}},
		{Netns: "node-b", Device: "flannel.1", Event: "drop", Link: journey.LinkIP, Len: 60, Data: []byte{0x45, 0, 0, 60}},
	}
	line, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "saved.ndjson")
	if err := os.WriteFile(in, []byte(string(line)+"\n"+string(line)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	svg, pcap := filepath.Join(dir, "j.svg"), filepath.Join(dir, "j.pcapng")
	var stdout, stderr bytes.Buffer
	if err := runShow([]string{"--svg", svg, "--pcapng", pcap, in}, nil, &stdout, &stderr); err != nil {
		t.Fatalf("show: %v\n%s", err, stderr.String())
	}
	for _, f := range []string{svg, filepath.Join(dir, "j-2.svg")} {
		b, err := os.ReadFile(f)
		if err != nil || !bytes.Contains(b, []byte("<svg")) || !bytes.Contains(b, []byte("NETFILTER_DROP")) {
			t.Errorf("%s: %v %q", f, err, b)
		}
	}
	if !strings.Contains(stderr.String(), "wrote 4 packets to "+pcap) || !strings.Contains(stderr.String(), "wrote 2 SVG") {
		t.Errorf("stderr %q", stderr.String())
	}
	if !strings.Contains(stdout.String(), "picture:") {
		t.Errorf("report lacks the picture:\n%s", stdout.String())
	}
	if err := runShow([]string{"--svg", "-", in}, nil, &stdout, &stderr); exitcode.Of(err) != exitcode.Usage {
		t.Errorf("--svg -: %v, want a usage error", err)
	}
}
