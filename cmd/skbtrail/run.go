package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Exit statuses of the contract.
const (
	exitOK       = 0
	exitProblem  = 1 // a journey was dropped, rejected or lost, or an error finding
	exitUsage    = 2 // usage or environment error
	exitNoPacket = 3 // no matching packet before the timeout
)

// exitError carries an exit status; an empty message prints nothing.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return ""
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

func usageErr(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	return exitUsage
}

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
		return &exitError{code: exitUsage}
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
	return usageErr("unknown command %q (try: %s)", args[0], strings.Join([]string{"trace", "daemon", "doctor", "show", "version"}, ", "))
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
