package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

const usage = `usage: skbtrail <command> [flags]

commands:
  trace    follow packets matching a filter and report their journeys
  daemon   node service: drop monitor, NDJSON events, metrics, trace API
  doctor   report what this kernel offers skbtrail
  show     render saved NDJSON journeys (trace --json, the daemon's events) as text
  version  print the version

run 'skbtrail <command> --help' for the flags of a command`

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, usage)
		return &exitcode.Error{Code: exitcode.Usage}
	}
	switch args[0] {
	case "trace":
		return runTrace(ctx, args[1:], os.Stdout, os.Stderr)
	case "daemon":
		return runDaemon(ctx, args[1:], os.Stderr)
	case "doctor":
		return runDoctor(ctx, args[1:], os.Stdout)
	case "show":
		return runShow(args[1:], os.Stdin, os.Stdout, os.Stderr)
	case "version", "--version":
		fmt.Println("skbtrail " + version)
		return nil
	case "help", "-h", "--help":
		fmt.Println(usage)
		return nil
	}
	return exitcode.Usagef("unknown command %q (try: %s)", args[0], strings.Join([]string{"trace", "daemon", "doctor", "show", "version"}, ", "))
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
