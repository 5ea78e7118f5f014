package procs

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A process is stopped by its PID: SIGTERM first, SIGKILL when it ignores
// it; a stopped or nil process is left alone.
func TestStopTermThenKill(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "p.log")
	polite, err := Start("polite", log, log, "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	stubborn, err := Start("stubborn", log, log, "sh", "-c", `trap "" TERM; echo up; while :; do sleep 0.05; done`)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := polite.Stop(5 * time.Second); err != nil || !polite.Exited() {
		t.Fatalf("stop polite: %v (exited %v)", err, polite.Exited())
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("SIGTERM took %s", d)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(LogTail(log, 5), "up") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // the trap is set once it printed
	}
	if err := stubborn.Stop(200 * time.Millisecond); err != nil || !stubborn.Exited() {
		t.Fatalf("stop stubborn: %v (exited %v)", err, stubborn.Exited())
	}
	if stubborn.Err() == nil {
		t.Error("a SIGKILLed process ended without an error")
	}
	if err := polite.Stop(time.Second); err != nil {
		t.Errorf("second stop: %v", err)
	}
	var none *Proc
	if err := none.Stop(time.Second); err != nil {
		t.Errorf("nil stop: %v", err)
	}
}

// WaitFor ends when the process exits, naming it and its log's tail.
func TestWaitForExit(t *testing.T) {
	log := filepath.Join(t.TempDir(), "p.log")
	p, err := Start("crasher", log, log, "sh", "-c", "echo bad config >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitFor(context.Background(), 10*time.Second, "ready", func(context.Context) (bool, error) { return false, nil })
	if err == nil || !strings.Contains(err.Error(), "crasher exited before ready") || !strings.Contains(err.Error(), "bad config") {
		t.Fatalf("WaitFor = %v", err)
	}
	ok, err := Start("ok", log, log, "sleep", "30")
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Stop(time.Second)
	n := 0
	if err := ok.WaitFor(context.Background(), 10*time.Second, "ready", func(context.Context) (bool, error) { n++; return n == 3, nil }); err != nil {
		t.Errorf("WaitFor a ready process: %v", err)
	}
	if _, err := Start("missing", filepath.Join(t.TempDir(), "no", "such", "dir.log"), log, "true"); err == nil || !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("Start with an unwritable log: %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}
