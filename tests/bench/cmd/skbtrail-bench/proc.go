package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// lockedBuffer collects a child's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.b.Len() > 1<<20 { // keep the head, it has what we wait for
		return len(p), nil
	}
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// child is a long-running process this program started. It is only ever
// signalled through its own PID.
type child struct {
	name string
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error // exit status, valid after done
}

// startChild starts args in its own process group (a Ctrl-C on the
// terminal reaches only us, and we stop the children in order) with
// SIGTERM as parent-death signal (they do not outlive us if we crash).
func startChild(name string, args ...string) (*child, error) {
	c := &child{name: name, out: &lockedBuffer{}, done: make(chan struct{})}
	c.cmd = exec.Command(args[0], args[1:]...)
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitFor waits until ok holds, failing if the child exits first.
func (c *child) waitFor(ctx context.Context, timeout time.Duration, what string, ok func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !ok() {
		select {
		case <-c.done:
			return fmt.Errorf("%s (pid %d) exited (%v) before %s:\n%s", c.name, c.pid(), c.err, what, indent(c.out.String()))
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return fmt.Errorf("%s (pid %d): no %s after %v:\n%s", c.name, c.pid(), what, timeout, indent(c.out.String()))
		case <-tick.C:
		}
	}
	return nil
}

// waitOutput waits until the child printed substr.
func (c *child) waitOutput(ctx context.Context, timeout time.Duration, substr string) error {
	return c.waitFor(ctx, timeout, fmt.Sprintf("%q in its output", substr), func() bool {
		return strings.Contains(c.out.String(), substr)
	})
}

// stop sends sig to the child's PID, waits up to grace, then kills that
// PID. It returns the child's exit error (nil if it exited 0).
func (c *child) stop(sig syscall.Signal, grace time.Duration) error {
	if !c.exited() {
		_ = c.cmd.Process.Signal(sig)
		select {
		case <-c.done:
		case <-time.After(grace):
			fmt.Fprintf(os.Stderr, "skbtrail-bench: %s (pid %d) ignored %v for %v: killing it\n", c.name, c.pid(), sig, grace)
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	return c.err
}

func indent(s string) string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return "    (no output)"
	}
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}

// children tracks every child still running, so that every exit path
// (error, Ctrl-C) stops them.
type children struct {
	mu   sync.Mutex
	list []*child
}

func (cs *children) start(name string, args ...string) (*child, error) {
	c, err := startChild(name, args...)
	if err != nil {
		return nil, err
	}
	cs.mu.Lock()
	cs.list = append(cs.list, c)
	cs.mu.Unlock()
	return c, nil
}

// stop stops one child (SIGTERM, then SIGKILL) and forgets it.
func (cs *children) stop(c *child) error {
	err := c.stop(syscall.SIGTERM, 10*time.Second)
	cs.mu.Lock()
	for i, x := range cs.list {
		if x == c {
			cs.list = append(cs.list[:i], cs.list[i+1:]...)
			break
		}
	}
	cs.mu.Unlock()
	return err
}

// stopAll stops the remaining children, the most recent first.
func (cs *children) stopAll() {
	cs.mu.Lock()
	list := cs.list
	cs.list = nil
	cs.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		_ = list[i].stop(syscall.SIGTERM, 10*time.Second)
	}
}
