package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/skbtrail/skbtrail/tests/cluster"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// labNodes are the Kubernetes names of the lab's two real nodes
// (cluster.Options.Nodes' default).
var labNodes = []string{lab.RoleNodeA, lab.RoleNodeB}

// envConfig says what upEnv starts.
type envConfig struct {
	skbtrail, plugin string // paths, made absolute
	manifests        string // "" = deploy/kubernetes of the repository
	logf             func(format string, args ...any)
}

// env is a running lab + cluster + daemons. End it with down.
type env struct {
	cfg    envConfig
	lab    *lab.Lab
	c      *cluster.Cluster
	extras []*extraNode // bench only: nodes without a real lab node
}

// absBinary resolves an executable given on the command line to an
// absolute path (the daemons and the plugin run under `ip netns exec`).
func absBinary(flagName, path string) (string, error) {
	if path == "" {
		return "", fmt.Errorf("--%s PATH is required", flagName)
	}
	p, err := exec.LookPath(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", flagName, err)
	}
	return filepath.Abs(p)
}

// preflight fails early, before anything is created, on what would make
// the lab or the cluster fail later.
func preflight() error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates network namespaces, loads BPF programs and runs kube-apiserver/etcd (run it with sudo)")
	}
	if _, err := cluster.LocateBinaries(); err != nil {
		return err
	}
	return nil
}

// upEnv builds the lab (healthy, verified), brings the control plane up
// and starts a daemon on both lab nodes. On error everything already
// started is torn down.
func upEnv(ctx context.Context, cfg envConfig) (*env, error) {
	if err := preflight(); err != nil {
		return nil, err
	}
	e := &env{cfg: cfg}
	fail := func(err error) (*env, error) {
		if derr := e.down(); derr != nil {
			err = errors.Join(err, fmt.Errorf("teardown: %w", derr))
		}
		return nil, err
	}
	start := time.Now()
	l, err := lab.Up(ctx, lab.Config{Logf: cfg.logf})
	if err != nil {
		return nil, err
	}
	e.lab = l
	if err := l.Verify(ctx, 5*time.Second); err != nil {
		return fail(err)
	}
	cfg.logf("lab %s up in %s", l.Prefix, time.Since(start).Round(time.Millisecond))
	c, err := cluster.Up(ctx, cluster.Options{
		Lab: l, Skbtrail: cfg.skbtrail, Plugin: cfg.plugin, Nodes: labNodes, Manifests: cfg.manifests, Logf: cfg.logf,
	})
	if err != nil {
		return fail(err)
	}
	e.c = c
	for _, n := range labNodes {
		t := time.Now()
		if err := c.StartDaemon(ctx, n); err != nil {
			return fail(fmt.Errorf("daemon on %s: %w", n, err))
		}
		cfg.logf("daemon on %s ready in %s", n, time.Since(t).Round(time.Millisecond))
	}
	return e, nil
}

// down stops and removes everything upEnv and addExtra created: the extra
// nodes' daemons and namespaces, then the control plane and its daemons,
// then the lab. It is safe on a partly built env.
func (e *env) down() error {
	var errs []error
	for i := len(e.extras) - 1; i >= 0; i-- {
		errs = append(errs, e.extras[i].remove())
	}
	e.extras = nil
	if e.c != nil {
		errs = append(errs, e.c.Down())
		e.c = nil
	}
	if e.lab != nil {
		errs = append(errs, e.lab.Down())
		if left := lab.ExistingNetns(e.lab.Prefix); len(left) > 0 {
			errs = append(errs, fmt.Errorf("namespaces of lab %s left behind: %v (skbtrail-lab down --prefix %s)", e.lab.Prefix, left, e.lab.Prefix))
		}
		e.lab = nil
	}
	return errors.Join(errs...)
}

// pluginCmd returns the command that runs the plugin as user "tracer" from
// the control-plane namespace (where the API server's address routes):
// ip netns exec <ctl> <plugin> --kubeconfig <tracer's> args...
func (e *env) pluginCmd(ctx context.Context, args ...string) *exec.Cmd {
	full := append([]string{"netns", "exec", e.c.CtlNetns(), e.cfg.plugin, "--kubeconfig", e.c.Kubeconfig(cluster.UserTracer)}, args...)
	cmd := exec.CommandContext(ctx, "ip", full...)
	// On Ctrl-C/SIGTERM ask the plugin to stop; kill it only if it does not.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// exitStatus turns the result of running a command into its exit status
// (128+signal when a signal ended it); err is returned when it did not run.
func exitStatus(err error) (int, error) {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return 128 + int(ws.Signal()), nil
		}
		return ee.ExitCode(), nil
	}
	if err != nil {
		return -1, err
	}
	return 0, nil
}
