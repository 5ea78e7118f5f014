// Command skbtrail-cluster runs skbtrail's cluster mode end to end on one
// machine: the netns lab (tests/lab), a real kube-apiserver + etcd that
// describes it (tests/cluster) and one real `skbtrail daemon` per lab node,
// traced through the kubectl plugin as the RBAC-limited user "tracer".
//
//	skbtrail-cluster demo  --skbtrail PATH --plugin PATH [--fault NAME] [--json]
//	skbtrail-cluster bench --skbtrail PATH --plugin PATH [--nodes 2,4,8] [--rounds 3] [--timeout 5s]
//
// Everything it creates (namespaces, processes, temporary files) is removed
// before it exits, also on SIGINT/SIGTERM or an error. It needs root.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// exitCodeError makes main exit with code without printing anything more.
type exitCodeError struct{ code int }

func (e exitCodeError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	interrupted := ctx.Err() != nil
	stop()
	if err == nil {
		return
	}
	var ec exitCodeError
	if errors.As(err, &ec) {
		os.Exit(ec.code)
	}
	fmt.Fprintln(os.Stderr, "skbtrail-cluster:", err)
	switch {
	case interrupted:
		os.Exit(130)
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	}
	os.Exit(2)
}

const usage = `usage:
  skbtrail-cluster demo --skbtrail PATH --plugin PATH [--fault NAME] [--json]
      build the lab, start a real kube-apiserver + etcd describing it and one
      skbtrail daemon per lab node, apply the fault (default forward-drop), run
        kubectl-skbtrail trace client -n default --to svc/web:80 --probe [--json]
      as user "tracer", tear everything down and exit with the plugin's status
  skbtrail-cluster bench --skbtrail PATH --plugin PATH [--nodes 2,4,8] [--rounds 3] [--timeout 5s]
      time a cross-node kubectl skbtrail trace (healthy lab, --probe) with N
      nodes; nodes beyond the lab's two are Node objects whose daemons watch an
      empty network namespace of their own (see the table's notes)
Both need root. Faults: see 'skbtrail-lab faults'.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "demo":
		return cmdDemo(ctx, rest, stdout, stderr)
	case "bench":
		return cmdBench(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("skbtrail-cluster "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%s: unexpected arguments: %s", fs.Name(), strings.Join(fs.Args(), " "))
	}
	return nil
}

func logTo(w io.Writer) func(string, ...any) {
	return func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
}
