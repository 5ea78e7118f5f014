// Command skbtrail traces packets through network namespaces, devices, NAT
// and encapsulation, and says where they were dropped and why.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"syscall"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

// The main goroutine keeps the main thread, so a netnsutil.Do goroutine
// whose namespace restore fails never runs on it: the runtime can end any
// other thread with its goroutine, but not the main one.
func init() { runtime.LockOSThread() }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(os.Stderr, "skbtrail: "+msg)
		}
	}
	os.Exit(exitcode.Of(err))
}
