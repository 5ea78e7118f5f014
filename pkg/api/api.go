// Package api is the daemon's local API: HTTP over a unix socket (mode
// 0600, root). POST /v1/trace runs a trace on the daemon's programs and
// streams NDJSON messages back: {"ready": "..."} once the filter is in the
// kernel, then {"journey": {...}} per journey, then {"done": {...}} or
// {"error": "..."}.
package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/trace"
	"github.com/skbtrail/skbtrail/pkg/wire"
)

// DefaultSocket is where the daemon listens by default.
const DefaultSocket = "/run/skbtrail/skbtrail.sock"

// The stream's types are pkg/wire's (shared with the kubectl plugin).
type (
	Message     = wire.Message
	Done        = wire.Done
	Info        = wire.Info
	RemoteError = wire.RemoteError
)

// ReadStream reads a trace stream (see wire.ReadStream).
var ReadStream = wire.ReadStream

// Tracer runs one trace (the daemon's engine).
type Tracer interface {
	Trace(ctx context.Context, req trace.Request, ready func(string), emit func(*journey.Journey) error) (trace.Result, error)
}

// SocketPath turns "unix:///run/x.sock" or a bare path into a path.
func SocketPath(listen string) (string, error) {
	p := strings.TrimPrefix(listen, "unix://")
	if p == "" || !filepath.IsAbs(p) {
		return "", fmt.Errorf("--listen %q: want unix:///absolute/path.sock", listen)
	}
	return p, nil
}

// Listen opens the socket: removes a stale one left by a killed daemon,
// refuses to steal one a live daemon serves, and makes it 0600.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, 200*time.Millisecond); err == nil {
		c.Close()
		return nil, fmt.Errorf("another skbtrail daemon is serving %s", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
	}
	old := syscall.Umask(0o177)
	l, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// maxRequest bounds a trace request's body (a few hundred bytes in practice).
const maxRequest = 1 << 20

// Handler serves the API.
func Handler(t Tracer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/trace", func(w http.ResponseWriter, r *http.Request) {
		var req trace.Request
		r.Body = http.MaxBytesReader(w, r.Body, maxRequest)
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad trace request: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		flusher, _ := w.(http.Flusher)
		send := func(m Message) error {
			if err := enc.Encode(m); err != nil {
				return err
			}
			if flusher != nil {
				flusher.Flush()
			}
			return nil
		}
		res, err := t.Trace(r.Context(), req,
			func(desc string) { _ = send(Message{Ready: desc}) },
			func(j *journey.Journey) error {
				j.Normalize()
				return send(Message{Journey: j, Start: WallStart(j)})
			})
		if err != nil {
			_ = send(Message{Error: err.Error()})
			return
		}
		_ = send(Message{Done: &Done{Journeys: res.Journeys, Lost: res.Lost, ProbeError: res.ProbeError}})
	})
	mux.HandleFunc("GET /v1/ping", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	return mux
}

// ErrNoDaemon: nothing serves the socket.
var ErrNoDaemon = errors.New("no skbtrail daemon")

// Trace runs a trace through the daemon at socket. It returns ErrNoDaemon
// (wrapped) when nothing listens, so the caller can trace by itself.
func Trace(ctx context.Context, socket string, req trace.Request, ready func(string), emit func(*journey.Journey) error) (Done, error) {
	var done Done
	if _, err := os.Stat(socket); err != nil {
		return done, fmt.Errorf("%w at %s", ErrNoDaemon, socket)
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	body, err := json.Marshal(req)
	if err != nil {
		return done, err
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://skbtrail/v1/trace", bytes.NewReader(body))
	if err != nil {
		return done, err
	}
	resp, err := client.Do(hreq)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return done, fmt.Errorf("%w at %s (%v)", ErrNoDaemon, socket, err)
		}
		return done, fmt.Errorf("daemon at %s: %w", socket, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return done, &RemoteError{Msg: strings.TrimSpace(b.String())}
	}
	return ReadStream(resp.Body, ready, func(m Message) error { return emit(m.Journey) })
}

// WallStart is the wall-clock time (Unix ns) of a journey's first event
// (0 when it has none): event times are CLOCK_MONOTONIC.
func WallStart(j *journey.Journey) int64 {
	first, ok := j.FirstEventNs()
	if !ok {
		return 0
	}
	t := trace.WallClock()(first)
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
