// Package procs starts and stops the processes test labs run (etcd,
// flanneld, kube-apiserver, containerd, kubelet, skbtrail daemons): each
// is known by its PID and ended by it, never by name.
package procs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is a process a test started. argv must exec the program in place
// (as `ip netns exec` and `nsenter` without --fork do), so that the PID is
// the program's own.
type Proc struct {
	Name string
	Log  string // path of its stderr (and stdout unless sent elsewhere)
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	err  error         // Wait's result, valid after done
}

// Start starts argv (argv[0] looked up in $PATH) with its stderr appended
// to logPath and its stdout to outPath. The process gets SIGKILL if the
// test process dies first.
func Start(name, logPath, outPath string, argv ...string) (*Proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s log: %w", name, err)
	}
	defer f.Close()
	out := f
	if outPath != logPath {
		if out, err = os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return nil, fmt.Errorf("%s stdout: %w", name, err)
		}
		defer out.Close()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// StartInNetns starts `ip netns exec netns bin args...` with stdout and
// stderr appended to logPath.
func StartInNetns(name, netns, logPath, bin string, args ...string) (*Proc, error) {
	return Start(name, logPath, logPath, append([]string{"ip", "netns", "exec", netns, bin}, args...)...)
}

// PID is the process's id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is how the process ended (valid once Done is closed).
func (p *Proc) Err() error { return p.err }

// Exited reports whether the process has exited.
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop sends SIGTERM (by PID), SIGKILL after grace, and waits for the
// process. A nil or exited process is left alone.
func (p *Proc) Stop(grace time.Duration) error {
	if p == nil || p.Exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s (pid %d): %w", p.Name, p.PID(), err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.Name, p.PID())
	}
}

// LogTail returns the last n lines of the log at path.
func LogTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Failure wraps err with the process's state and the tail of its log.
func (p *Proc) Failure(err error) error {
	state := "running"
	if p.Exited() {
		state = fmt.Sprintf("exited: %v", p.err)
	}
	return fmt.Errorf("%w (%s pid %d %s; log %s:\n%s)", err, p.Name, p.PID(), state, p.Log, LogTail(p.Log, 30))
}

// WaitFor polls check until it returns true, the process exits, ctx ends
// or timeout passes. The last check error is reported.
func (p *Proc) WaitFor(ctx context.Context, timeout time.Duration, what string, check func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := check(ctx)
		if ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-p.done:
			return p.Failure(fmt.Errorf("%s exited before %s", p.Name, what))
		case <-ctx.Done():
			return p.Failure(fmt.Errorf("%s not %s after %s: %w", p.Name, what, timeout, errors.Join(ctx.Err(), last)))
		case <-time.After(150 * time.Millisecond):
		}
	}
}
