package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

func TestCommandFirst(t *testing.T) {
	for in, want := range map[string]string{
		"--kubeconfig k trace web --to svc/a:80":     "trace --kubeconfig k web --to svc/a:80",
		"-n ns --context=c nodes":                    "nodes -n ns --context=c",
		"trace web":                                  "trace web",
		"--kubeconfig trace trace web --to svc/a:80": "trace --kubeconfig trace web --to svc/a:80",
		"--json": "--json",
	} {
		if got := strings.Join(commandFirst(strings.Fields(in)), " "); got != want {
			t.Errorf("commandFirst(%q) = %q, want %q", in, got, want)
		}
	}
}

// Bad input is a one-line usage error (exit 2) before any API call.
func TestTraceUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--to", "svc/web:80"}, "want one POD"},
		{[]string{"client"}, "--to is required"},
		{[]string{"client", "--to", "web:80"}, "is not an IP address"},
		{[]string{"client", "--to", "svc/web:80", "--proto", "sctp"}, `--proto "sctp"`},
		{[]string{"client", "--to", "svc/web:80", "--timeout", "0s"}, "--timeout must be positive"},
		{[]string{"client", "--to", "svc/web:80", "--bogus"}, "unknown flag"},
	} {
		var out, errOut bytes.Buffer
		err := runTrace(context.Background(), c.args, &out, &errOut)
		if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("trace %v: %v (exit %d), want a one-line usage error with %q", c.args, err, exitcode.Of(err), c.want)
		}
	}
	if err := run(context.Background(), []string{"frobnicate"}); exitcode.Of(err) != exitcode.Usage {
		t.Errorf("unknown command: %v", err)
	}
}
