package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	"k8s.io/client-go/kubernetes"

	"github.com/skbtrail/skbtrail/pkg/cluster"
	"github.com/skbtrail/skbtrail/pkg/kubeclient"
	"github.com/skbtrail/skbtrail/pkg/output"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

const usage = `usage: kubectl skbtrail <command> [flags]

commands:
  trace POD [-n NS] --to TARGET   follow a packet from POD across the nodes it crosses
                                  (TARGET: svc/NAME[.NS]:PORT, pod/NAME[.NS]:PORT or IP:PORT)
  nodes                           which nodes run a skbtrail daemon that answers
  version                         print the version

run 'kubectl skbtrail <command> --help' for the flags of a command`

// commandFirst moves flags given before the command (kubectl style:
// kubectl-skbtrail --kubeconfig F trace ...) after it.
func commandFirst(args []string) []string {
	valued := map[string]bool{"--kubeconfig": true, "--context": true, "--skbtrail-namespace": true, "-n": true, "--namespace": true}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			return append(append([]string{a}, args[:i]...), args[i+1:]...)
		}
		if valued[a] {
			i++
		}
	}
	return args
}

func run(ctx context.Context, args []string) error {
	args = commandFirst(args)
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return &exitcode.Error{Code: exitcode.Usage}
	}
	switch args[0] {
	case "trace":
		return runTrace(ctx, args[1:], os.Stdout, os.Stderr)
	case "nodes":
		return runNodes(ctx, args[1:], os.Stdout, os.Stderr)
	case "version", "--version":
		fmt.Println("kubectl-skbtrail " + version)
		return nil
	case "help", "-h", "--help":
		fmt.Println(usage)
		return nil
	}
	return exitcode.Usagef("unknown command %q (try: trace, nodes, version)", args[0])
}

// kubeFlags are the connection flags every command takes, as kubectl's.
type kubeFlags struct {
	kubeconfig, context, daemonNS string
}

func (k *kubeFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&k.kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&k.context, "context", "", "the kubeconfig context to use")
	fs.StringVar(&k.daemonNS, "skbtrail-namespace", "skbtrail", "namespace of the skbtrail daemon pods")
}

func (k *kubeFlags) clients() (kubernetes.Interface, cluster.Caller, string, error) {
	rc, ns, err := kubeclient.UserConfig(k.kubeconfig, k.context)
	if err != nil {
		return nil, cluster.Caller{}, "", exitcode.Usagef("%v", err)
	}
	rc.UserAgent = "kubectl-skbtrail/" + version
	cs, err := kubeclient.Clientset(rc)
	if err != nil {
		return nil, cluster.Caller{}, "", exitcode.Usagef("%v", err)
	}
	fwd, err := kubeclient.Clientset(cluster.ForwardToken(rc))
	if err != nil {
		return nil, cluster.Caller{}, "", exitcode.Usagef("%v", err)
	}
	return cs, cluster.Caller{Client: fwd}, ns, nil
}

func parse(fs *pflag.FlagSet, args []string) (bool, error) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return false, nil
		}
		return false, exitcode.Usagef("%s: %v", fs.Name(), err)
	}
	return true, nil
}

func runTrace(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var k kubeFlags
	var ns, to, proto, svcCIDR string
	var probe, asJSON bool
	var timeout time.Duration
	fs := pflag.NewFlagSet("trace", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	k.add(fs)
	fs.StringVarP(&ns, "namespace", "n", "", "namespace of POD (default: the kubeconfig context's)")
	fs.StringVar(&to, "to", "", "svc/NAME:PORT, pod/NAME:PORT or IP:PORT")
	fs.StringVar(&proto, "proto", "", "tcp, udp or icmp (default: the Service port's protocol, else tcp)")
	fs.BoolVar(&probe, "probe", false, "send the first packet from the pod (TCP SYN, UDP datagram or ICMP echo), so no other traffic is needed")
	fs.DurationVar(&timeout, "timeout", 5*time.Second, "how long to wait for matching packets")
	fs.BoolVar(&asJSON, "json", false, "print the journey as one JSON object")
	fs.StringVar(&svcCIDR, "service-cidr", "10.96.0.0/12", "the cluster's Service (ClusterIP) range")
	if ok, err := parse(fs, args); !ok {
		return err
	}
	if fs.NArg() != 1 {
		return exitcode.Usagef("trace: want one POD (kubectl skbtrail trace POD [-n NS] --to TARGET)")
	}
	if to == "" {
		return exitcode.Usagef("trace: --to is required (svc/NAME:PORT, pod/NAME:PORT or IP:PORT)")
	}
	target, err := cluster.ParseTarget(to)
	if err != nil {
		return exitcode.Usagef("trace: %v", err)
	}
	switch proto = strings.ToLower(proto); proto {
	case "", "tcp", "udp", "icmp":
	default:
		return exitcode.Usagef("trace: --proto %q: want tcp, udp or icmp", proto)
	}
	if timeout <= 0 {
		return exitcode.Usagef("trace: --timeout must be positive")
	}
	cs, caller, defNS, err := k.clients()
	if err != nil {
		return err
	}
	if ns == "" {
		ns = defNS
	}
	plan, err := cluster.Resolve(ctx, cs, ns, fs.Arg(0), target, proto)
	if err != nil {
		return exitcode.Usagef("trace: %v", err)
	}
	if plan.Proto == "" {
		plan.Proto = "tcp"
	}
	daemons, err := cluster.FindDaemons(ctx, cs, k.daemonNS)
	if err != nil {
		return exitcode.Usagef("trace: %v", err)
	}
	progress := func(format string, args ...any) { fmt.Fprintf(stderr, "skbtrail: "+format+"\n", args...) }
	j, err := cluster.Run(ctx, caller, plan, daemons, cluster.Options{Probe: probe, Timeout: timeout, ServiceCIDR: svcCIDR, Progress: progress})
	if err != nil {
		return exitcode.Usagef("trace: %v", err)
	}
	if j == nil {
		return &exitcode.Error{Code: exitcode.NoPacket, Err: fmt.Errorf("no matching packet seen in %s on %s", timeout, strings.Join(plan.Nodes, ", "))}
	}
	var w output.Writer = output.NewText(stdout)
	if asJSON {
		w = output.NewNDJSON(stdout)
	}
	if err := w.Write(j); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if j.Failed() {
		return &exitcode.Error{Code: exitcode.Problem}
	}
	return nil
}

func runNodes(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var k kubeFlags
	var asJSON bool
	fs := pflag.NewFlagSet("nodes", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	k.add(fs)
	fs.BoolVar(&asJSON, "json", false, "print JSON")
	if ok, err := parse(fs, args); !ok {
		return err
	}
	cs, caller, _, err := k.clients()
	if err != nil {
		return err
	}
	list, err := cluster.Nodes(ctx, cs, caller, k.daemonNS)
	if err != nil {
		return exitcode.Usagef("nodes: %v", err)
	}
	if asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(list)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tDAEMON\tANSWERS\tVERSION\tKERNEL\tBACKENDS\tDEGRADED")
	bad := false
	for _, n := range list {
		answers, ver, kernel, backends, degraded := "no", "-", "-", "-", "-"
		if n.Info != nil {
			answers, ver, kernel = "yes", n.Info.Version, n.Info.Kernel
			backends = strings.Join(n.Info.Backends, ",")
			if len(n.Info.Degraded) > 0 {
				degraded = strings.Join(n.Info.Degraded, "; ")
			}
		} else {
			bad = true
			degraded = n.Why
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", n.Node, orDash(n.Daemon), answers, ver, kernel, backends, degraded)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if bad {
		return &exitcode.Error{Code: exitcode.Problem}
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
