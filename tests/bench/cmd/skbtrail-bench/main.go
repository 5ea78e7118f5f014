// Command skbtrail-bench runs skbtrail's benchmarks (see docs/bench.md):
//
//	skbtrail-bench throughput [--skbtrail bin/skbtrail] [--rounds 3] [--duration 8s] [--prefix P]
//	    iperf3 pod-a -> pod-b through the lab's VXLAN path with nothing attached,
//	    with `skbtrail daemon`, with the daemon plus an unrelated trace, and with
//	    tcpdump in both nodes; then the in-kernel cost per skbtrail program (root)
//	skbtrail-bench micro FILE
//	    summarise `go test -bench` output (tracer's BenchmarkDecode and
//	    tests/bench's BenchmarkStitch) as decode + stitch events per second
//	skbtrail-bench record [--out tests/bench/testdata/recorded.json] [--prefix P]
//	    trace packets in the lab and store the decoded events for BenchmarkStitch (root)
//	skbtrail-bench daemon [--skbtrail bin/skbtrail] [--idle 60s] [--churn 2000]
//	    the daemon itself: startup time, idle CPU and RSS, and a namespace churn
//	    after which its metric series and RSS must come back (root)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

const usage = `usage:
  skbtrail-bench throughput [--skbtrail PATH] [--rounds N] [--duration D] [--prefix P]   (root)
  skbtrail-bench micro FILE
  skbtrail-bench record [--out PATH] [--prefix P]                                      (root)
  skbtrail-bench daemon [--skbtrail PATH] [--idle 60s] [--churn 2000] [--prefix P]      (root)
  skbtrail-bench dense [--skbtrail PATH] [--old PATH] [--pods 250] [--rounds 5] [--prefix P]  (root)
  skbtrail-bench nftmark [--duration 5s] [--rounds 3] [--prefix P]                     (root)
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
		os.Exit(2)
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(os.Stderr, "skbtrail-bench: interrupted (everything it started is stopped and removed)")
		os.Exit(130)
	case errors.Is(err, errMissed):
		// the tables say which target was missed
		os.Exit(1)
	default:
		fmt.Fprintln(os.Stderr, "skbtrail-bench:", err)
		if errors.Is(err, errNotRoot) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

var (
	errMissed  = errors.New("a target was missed")
	errNotRoot = errors.New("needs root")
)

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return flag.ErrHelp
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "throughput":
		return cmdThroughput(ctx, rest, stdout, stderr)
	case "micro":
		return cmdMicro(rest, stdout, stderr)
	case "record":
		return cmdRecord(ctx, rest, stdout, stderr)
	case "daemon":
		return cmdDaemon(ctx, rest, stdout, stderr)
	case "dense":
		return cmdDense(ctx, rest, stdout, stderr)
	case "nftmark":
		return cmdNftmark(ctx, rest, stdout, stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", cmd)
	}
}

func requireRoot(what string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%s %w: it creates network namespaces and loads BPF programs (run it with sudo; `go test -bench` and `skbtrail-bench micro` need no root)", what, errNotRoot)
	}
	return nil
}

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("skbtrail-bench "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
