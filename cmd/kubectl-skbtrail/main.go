// Command kubectl-skbtrail is skbtrail's kubectl plugin (kubectl skbtrail):
// one packet's journey across the nodes of a cluster, asked of the skbtrail
// daemon of every node on the path through the Kubernetes API server.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "kubectl-skbtrail: "+msg)
		}
	}
	os.Exit(exitcode.Of(err))
}
