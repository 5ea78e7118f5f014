package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestPrintThroughput(t *testing.T) {
	var out bytes.Buffer
	b := &runner{out: &out, modes: []mode{
		{key: "a", name: "baseline"},
		{key: "b", name: "daemon", target: daemonTarget},
		{key: "c", name: "trace", target: traceTarget},
	}}
	run := func(round int, mode string, gbps float64, foreign ...string) runResult {
		return runResult{round: round, mode: mode, res: iperfResult{bps: gbps * 1e9}, cpu: -1, foreign: foreign}
	}
	results := []runResult{
		run(0, "a", 10), run(0, "b", 9.9), run(0, "c", 9.0),
		run(1, "a", 10.2), run(1, "b", 10.1), run(1, "c", 9.2),
		// a tainted round: left out of the medians
		run(2, "a", 5, "tp_netif_receive_skb#1"), run(2, "b", 5), run(2, "c", 4, "nf_stage_0#2"),
	}
	missed := b.printThroughput(results)
	s := strings.Join(strings.Fields(out.String()), " ")
	if !missed {
		t.Errorf("trace at 0.90 of the baseline: not reported as missed\n%s", out.String())
	}
	for _, want := range []string{
		"| a) baseline | 10.10 | 2/3 | 10.00 10.20 5.00* | 1.000 | 1.000 1.000 1.000* |",
		"| b) daemon | 9.90 | 3/3 | 9.90 10.10 5.00 | 0.980 | 0.990 0.990 1.000* | +2.0% | < 2% | OK |",
		"| c) trace | 9.10 | 2/3 | 9.00 9.20 4.00* | 0.901 | 0.900 0.902 0.800* | +9.9% | < 5% | MISSED |",
		"WARNING: runs marked *",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
