// Command skbtrail traces packets through network namespaces, devices, NAT
// and encapsulation, and says where they were dropped and why.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "skbtrail: "+msg)
		}
	}
	os.Exit(exitCode(err))
}
