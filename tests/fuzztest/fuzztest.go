// Package fuzztest holds what the fuzz targets share.
package fuzztest

import (
	"testing"
	"time"
)

// Limit is how long one input may take before Bounded calls it a hang.
// Inputs take microseconds; the limit leaves room for -race and a busy
// machine.
const Limit = 5 * time.Second

// Bounded runs check on the input and fails t with the error it returns,
// or if it has not returned within Limit. Go's fuzzer has no per-input
// timeout: a worker stuck on an input just stops, and -fuzztime then ends
// the run as a pass. Through Bounded a hang is a failure whose input the
// fuzzer saves under testdata/fuzz. check runs on its own goroutine, so it
// reports a broken property by returning it, never with t.Fatal.
func Bounded(t testing.TB, check func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- check() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(Limit):
		t.Fatalf("input not handled within %v (a hang)", Limit)
	}
}
