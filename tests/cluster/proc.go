package cluster

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

// proc is a process the cluster started (by `ip netns exec`, which execs
// the program in place, so the PID is the program's own).
type proc struct {
	name string
	log  string // path of its stdout+stderr
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	err  error         // Wait's result, valid after done
}

// startProc starts `ip netns exec netns bin args...` with its stdout and
// stderr appended to logPath. The process gets SIGKILL if the test process
// dies first.
func startProc(name, netns, logPath, bin string, args ...string) (*proc, error) {
	return startProcOut(name, netns, logPath, logPath, bin, args...)
}

// startProcOut is startProc with stdout appended to outPath instead.
func startProcOut(name, netns, logPath, outPath, bin string, args ...string) (*proc, error) {
	return startCmd(name, logPath, outPath, append([]string{"ip", "netns", "exec", netns, bin}, args...)...)
}

// startCmd starts argv (whose first element is looked up in $PATH) with
// its stderr appended to logPath and its stdout to outPath. argv must exec
// the program in place (as `ip netns exec` and `nsenter` without --fork
// do), so that the PID is the program's own. The process gets SIGKILL if
// the test process dies first.
func startCmd(name, logPath, outPath string, argv ...string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("cluster: %s log: %w", name, err)
	}
	defer f.Close()
	out := f
	if outPath != logPath {
		if out, err = os.OpenFile(outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600); err != nil {
			return nil, fmt.Errorf("cluster: %s stdout: %w", name, err)
		}
		defer out.Close()
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = out, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("cluster: start %s: %w", name, err)
	}
	p := &proc{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the process (by PID), then SIGKILL after grace, and
// waits for it.
func (p *proc) stop(grace time.Duration) error {
	if p == nil || p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("cluster: kill %s (pid %d): %w", p.name, p.cmd.Process.Pid, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("cluster: %s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// logTail returns the last n lines of the log at path.
func logTail(path string, n int) string {
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

// failure wraps err with the process's state and the tail of its log.
func (p *proc) failure(err error) error {
	state := "running"
	if p.exited() {
		state = fmt.Sprintf("exited: %v", p.err)
	}
	return fmt.Errorf("%w (%s pid %d %s; log %s:\n%s)", err, p.name, p.cmd.Process.Pid, state, p.log, logTail(p.log, 30))
}

// waitFor polls check every interval until it returns true, the process
// exits, ctx ends or timeout passes. The last check error is reported.
func (p *proc) waitFor(ctx context.Context, timeout time.Duration, what string, check func(context.Context) (bool, error)) error {
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
			return p.failure(fmt.Errorf("cluster: %s exited before %s", p.name, what))
		case <-ctx.Done():
			return p.failure(fmt.Errorf("cluster: %s not %s after %s: %w", p.name, what, timeout, errors.Join(ctx.Err(), last)))
		case <-time.After(150 * time.Millisecond):
		}
	}
}
