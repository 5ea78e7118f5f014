package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

func TestDoctorJSON(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("SKBTRAIL_REQUIRE_PRIVILEGED") == "1" {
			t.Fatal("needs root (SKBTRAIL_REQUIRE_PRIVILEGED=1)")
		}
		t.Skip("needs root: the probes load BPF programs")
	}
	var out bytes.Buffer
	if err := runDoctor(context.Background(), []string{"--json"}, &out); err != nil {
		t.Fatalf("doctor --json: %v", err)
	}
	var r doctorReport
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("doctor --json output is not one JSON object: %v\n%s", err, out.String())
	}
	if r.Schema != "skbtrail.doctor/v1" || r.Kernel == "" {
		t.Errorf("schema/kernel = %q/%q", r.Schema, r.Kernel)
	}
	avail := map[string]bool{}
	for _, f := range r.Features {
		avail[f.Name] = f.Available
	}
	for _, name := range []string{"btf", "tp_btf", "kprobe", "kprobe.multi", "fentry", "netfilter_link", "tcx", "ringbuf", "lockdown", "bpf_stats"} {
		if _, ok := avail[name]; !ok {
			t.Errorf("feature %s missing from the report", name)
		}
	}
	for _, name := range []string{"btf", "tp_btf", "netfilter_link", "ringbuf"} {
		if !avail[name] {
			t.Errorf("%s reported unavailable", name)
		}
	}
	if len(r.Backends) != 6 {
		t.Errorf("got %d backends, want one per hook point (6)", len(r.Backends))
	}

	out.Reset()
	if err := runDoctor(context.Background(), nil, &out); err != nil {
		t.Fatalf("doctor: %v", err)
	}
	for _, want := range []string{"FEATURE", "tp_btf", "HOOK POINT", "nf-verdict", "tunnel-xmit"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestDoctorUsage(t *testing.T) {
	if err := runDoctor(context.Background(), []string{"extra"}, &bytes.Buffer{}); exitcode.Of(err) != exitcode.Usage {
		t.Errorf("doctor extra: exit %d, want %d", exitcode.Of(err), exitcode.Usage)
	}
	if err := runDoctor(context.Background(), []string{"--nope"}, &bytes.Buffer{}); exitcode.Of(err) != exitcode.Usage {
		t.Errorf("doctor --nope: exit %d, want %d", exitcode.Of(err), exitcode.Usage)
	}
}
