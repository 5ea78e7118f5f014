package wire

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/tests/fuzztest"
)

// The testdata streams are what a daemon sent through its API in the lab:
// probes that were rejected (TCP) and dropped (UDP), a passive trace
// that saw nothing, and a request for a namespace that does not exist.

func streams(tb testing.TB) map[string][]byte {
	tb.Helper()
	paths, err := filepath.Glob("testdata/stream-*.ndjson")
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no testdata streams: %v", err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

func TestReadStreamRecorded(t *testing.T) {
	for name, b := range streams(t) {
		var ready []string
		journeys := 0
		done, err := ReadStream(bytes.NewReader(b), func(s string) { ready = append(ready, s) }, func(m Message) error {
			journeys++
			return nil
		})
		var remote *RemoteError
		switch {
		case strings.Contains(name, "error"):
			if !errors.As(err, &remote) || !strings.Contains(remote.Msg, "not found") {
				t.Errorf("%s: %v, want the daemon's error", name, err)
			}
		case err != nil:
			t.Errorf("%s: %v", name, err)
		case done.Journeys != journeys || len(ready) == 0:
			t.Errorf("%s: done %+v after %d journeys, ready %q", name, done, journeys, ready)
		}
	}
}

// endless is a daemon that sends one line that never ends.
type endless struct{ n int }

func (e *endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'a'
	}
	e.n += len(p)
	return len(p), nil
}

// TestReadStreamLineBound: a line that never ends is an error once it
// passes the longest message ReadStream takes, not memory without end.
func TestReadStreamLineBound(t *testing.T) {
	r := &endless{}
	_, err := ReadStream(r, nil, func(Message) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "too long") {
		t.Fatalf("endless line: %v", err)
	}
	if r.n > 1<<24+1<<16 {
		t.Errorf("read %d bytes of one line before giving up", r.n)
	}
}

// FuzzReadStream: on any bytes ReadStream ends, without a crash; it
// finishes without error only at a done message, reports the daemon's
// error as a RemoteError, stops at the first error emit returns, and each
// journey message it emits encodes to JSON that reads back the same.
func FuzzReadStream(f *testing.F) {
	for _, b := range streams(f) {
		f.Add(b, uint8(0))
		f.Add(b, uint8(1))
	}
	f.Add([]byte(`{"ready":"x"}`+"\n"+`{"journey":{},"done":{"journeys":1}}`+"\n"+`{"error":""}`+"\n"+`null`+"\n"+`{"done":{"journeys":-1,"lost":1}}`), uint8(0))
	f.Add([]byte(`{"journey":{"hops":[]}}`+"\n\n"+`{"error":"boom"}`), uint8(2))
	f.Fuzz(func(t *testing.T, data []byte, failAt uint8) {
		fuzztest.Bounded(t, func() error { return checkStream(data, int(failAt)) })
	})
}

var errEmit = errors.New("emit failed")

// checkStream reads data with an emit that fails at journey failAt (0:
// never).
func checkStream(data []byte, failAt int) error {
	emitted := 0
	var bad error
	done, err := ReadStream(bytes.NewReader(data), func(s string) {
		if s == "" && bad == nil {
			bad = errors.New("empty ready line")
		}
	}, func(m Message) error {
		emitted++
		if m.Journey == nil && bad == nil {
			bad = fmt.Errorf("message %+v emitted without a journey", m)
		}
		if bad == nil {
			bad = reencodes(m)
		}
		if emitted == failAt {
			return errEmit
		}
		return nil
	})
	if bad != nil {
		return bad
	}
	if emitted > bytes.Count(data, []byte("\n"))+1 {
		return fmt.Errorf("%d journeys from %d lines", emitted, bytes.Count(data, []byte("\n"))+1)
	}
	if failAt > 0 && emitted >= failAt && !errors.Is(err, errEmit) {
		return fmt.Errorf("emit failed, ReadStream returned %v", err)
	}
	if err == nil && !bytes.Contains(data, []byte("done")) {
		return fmt.Errorf("finished (%+v) without a done message", done)
	}
	var remote *RemoteError
	if errors.As(err, &remote) && (remote.Msg == "" || !bytes.Contains(data, []byte("error"))) {
		return fmt.Errorf("remote error %q", remote.Msg)
	}
	return nil
}

// reencodes checks that m's JSON reads back as a message with the same
// JSON (encode after decode is stable).
func reencodes(m Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("message read from the stream does not encode: %v", err)
	}
	var back Message
	_, err = ReadStream(io.MultiReader(bytes.NewReader(b), strings.NewReader("\n{\"done\":{}}\n")), nil, func(m Message) error {
		back = m
		return nil
	})
	if err != nil {
		return fmt.Errorf("re-encoded message %s: %v", b, err)
	}
	b2, err := json.Marshal(back)
	if err != nil || !bytes.Equal(b, b2) {
		return fmt.Errorf("message encodes as\n%s\nwhich reads back as\n%s", b, b2)
	}
	return nil
}
