package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

// Bad trace flags are a one-line usage error (exit 2) before anything is
// loaded or a daemon is asked.
func TestTraceUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--no-netfilter", "--netfilter", "all", "--to", "192.0.2.1:80"}, "--netfilter and --no-netfilter cannot be combined"},
		{[]string{"--no-daemon", "--netfilter", "sometimes", "--to", "192.0.2.1:80"}, `--netfilter "sometimes": want reached or all`},
		{[]string{"--no-daemon", "--to", "192.0.2.1"}, "want HOST:PORT"},
		{[]string{"extra"}, `unexpected argument "extra"`},
	} {
		var out, errOut bytes.Buffer
		err := runTrace(context.Background(), c.args, &out, &errOut)
		if err == nil {
			t.Errorf("%v: no error, want usage error %q", c.args, c.want)
			continue
		}
		if exitcode.Of(err) != exitcode.Usage || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v (exit %d), want usage error %q", c.args, err, exitcode.Of(err), c.want)
		}
		if strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: error spans lines: %q", c.args, err)
		}
	}
}
