package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/cluster"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// benchRow is the result for one node count.
type benchRow struct {
	nodes   int
	samples []time.Duration
}

func (r benchRow) min() time.Duration { return slices.Min(r.samples) }
func (r benchRow) max() time.Duration { return slices.Max(r.samples) }

// median of the samples (the mean of the middle two for an even count).
func (r benchRow) median() time.Duration {
	s := slices.Clone(r.samples)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// parseNodeCounts parses "2,4,8": unique counts from 2 (the lab's nodes)
// to 2+maxExtra, ascending (extra nodes are only ever added).
func parseNodeCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < len(labNodes) || n > len(labNodes)+maxExtra {
			return nil, fmt.Errorf("--nodes: %q: want node counts from %d to %d", f, len(labNodes), len(labNodes)+maxExtra)
		}
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--nodes: no node count in %q", s)
	}
	slices.Sort(out)
	return out, nil
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0f", float64(d)/float64(time.Millisecond)) }

// writeTable prints the results.
func writeTable(w io.Writer, rows []benchRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "nodes\tmedian ms\tmin ms\tmax ms\trounds\t")
	for _, r := range rows {
		if len(r.samples) == 0 {
			continue
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t\n", r.nodes, ms(r.median()), ms(r.min()), ms(r.max()), len(r.samples))
	}
	return tw.Flush()
}

func cmdBench(ctx context.Context, args []string, stdout, stderr io.Writer) (err error) {
	fs := newFlagSet("bench", stderr)
	skb := fs.String("skbtrail", "", "path of the skbtrail binary (required)")
	plugin := fs.String("plugin", "", "path of the kubectl-skbtrail binary (required)")
	nodesFlag := fs.String("nodes", "2,4,8", "node counts to measure (2 = the lab's two nodes; more add extra nodes)")
	rounds := fs.Int("rounds", 3, "measured traces per node count (after one warm-up trace)")
	timeout := fs.Duration("timeout", 5*time.Second, "the plugin's --timeout (how long a daemon waits for matching packets)")
	manifests := fs.String("manifests", "", "directory with daemonset.yaml and rbac.yaml (default: deploy/kubernetes of the repository)")
	if err := parse(fs, args); err != nil {
		return err
	}
	counts, err := parseNodeCounts(*nodesFlag)
	if err != nil {
		return err
	}
	if *rounds < 1 {
		return fmt.Errorf("bench: --rounds must be at least 1")
	}
	if *timeout <= 0 {
		return fmt.Errorf("bench: --timeout must be positive")
	}
	cfg := envConfig{manifests: *manifests, logf: logTo(stderr)}
	if cfg.skbtrail, err = absBinary("skbtrail", *skb); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	if cfg.plugin, err = absBinary("plugin", *plugin); err != nil {
		return fmt.Errorf("bench: %w", err)
	}

	e, err := upEnv(ctx, cfg)
	if err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	defer func() {
		if derr := e.down(); derr != nil {
			fmt.Fprintf(stderr, "skbtrail-cluster: teardown: %v\n", derr)
			if err == nil {
				err = fmt.Errorf("bench: teardown: %w", derr)
			}
		}
	}()

	targs := []string{"trace", cluster.ClientPod, "-n", metav1.NamespaceDefault, "--to", "svc/" + cluster.WebService + ":80",
		"--probe", "--timeout", timeout.String(), "--json"}
	var rows []benchRow
	report := func() {
		fmt.Fprintf(stdout, "\ncluster trace, command to answer: kubectl skbtrail %s\n", strings.Join(targs, " "))
		fmt.Fprintf(stdout, "(as user %q through a real kube-apiserver %s; healthy lab; wall time of the plugin process, median of %d rounds after 1 warm-up per row)\n",
			cluster.UserTracer, e.c.APIServerAddr(), *rounds)
		_ = writeTable(stdout, rows)
		fmt.Fprintf(stdout, "Nodes 1-2 are the lab's real nodes (node-a: client, ClusterIP DNAT, VXLAN; node-b: the web pod). Every node runs a\n"+
			"real skbtrail daemon with its BPF programs attached. Nodes 3+ are extra Node objects, each with a real daemon watching\n"+
			"an empty network namespace of its own (%s, linked to the lab router) and a fake endpoint of Service web\n"+
			"(10.244.x.2 on that node, no such address anywhere): the plugin asks their daemons too, but the lab's DNAT sends the\n"+
			"probe to node-b only, so they see nothing; the plugin ends their traces once node-b's part continues node-a's, so\n"+
			"what grows with the nodes is the fan-out: resolving, asking and stopping one more daemon each.\n", extraNet)
	}
	for _, n := range counts {
		for len(e.extras) < n-len(labNodes) {
			t := time.Now()
			x, err := e.addExtra(ctx)
			if err != nil {
				report()
				return fmt.Errorf("bench: extra node: %w", err)
			}
			cfg.logf("extra node %s (netns %s, %s) with its daemon ready in %s", x.name, x.netns, x.ip, time.Since(t).Round(time.Millisecond))
		}
		row := benchRow{nodes: n}
		for r := 0; r <= *rounds; r++ {
			d, err := benchTrace(ctx, e, n, targs)
			if err != nil {
				rows = append(rows, row)
				report()
				return fmt.Errorf("bench: %d nodes, round %d: %w", n, r, err)
			}
			what := "warm-up"
			if r > 0 {
				row.samples = append(row.samples, d)
				what = fmt.Sprintf("round %d", r)
			}
			cfg.logf("%d nodes, %s: %s", n, what, d.Round(time.Millisecond))
		}
		rows = append(rows, row)
	}
	report()
	return nil
}

// benchTrace runs the plugin once and checks the answer: exit 0, the probe
// delivered on node-b, n nodes on the path, every one observed.
func benchTrace(ctx context.Context, e *env, n int, targs []string) (time.Duration, error) {
	cmd := e.pluginCmd(ctx, targs...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	runErr := cmd.Run()
	d := time.Since(start)
	code, err := exitStatus(runErr)
	if err != nil {
		return 0, err
	}
	if ctx.Err() != nil {
		return 0, ctx.Err()
	}
	fail := func(format string, args ...any) (time.Duration, error) {
		return 0, fmt.Errorf(format+"\nstderr:\n%s\nstdout:\n%s", append(args, errb.String(), out.String())...)
	}
	if code != 0 {
		return fail("plugin exit status %d, want 0", code)
	}
	var j journey.Journey
	if err := json.Unmarshal([]byte(out.String()), &j); err != nil {
		return fail("plugin output is not a journey: %v", err)
	}
	if j.Verdict.Kind != journey.Delivered || j.Verdict.Node != lab.RoleNodeB {
		return fail("verdict %+v, want delivered on %s", j.Verdict, lab.RoleNodeB)
	}
	if len(j.Nodes) != n {
		return fail("%d nodes on the path (%+v), want %d", len(j.Nodes), j.Nodes, n)
	}
	for _, o := range j.Nodes {
		if !o.Observed {
			return fail("node %s not observed: %s", o.Name, o.Why)
		}
	}
	return d, nil
}
