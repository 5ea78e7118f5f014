package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/pkg/api"
	"github.com/skbtrail/skbtrail/pkg/daemon"
	"github.com/skbtrail/skbtrail/pkg/kubeclient"
	"github.com/skbtrail/skbtrail/pkg/trace"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

func runDaemon(ctx context.Context, args []string, stderr io.Writer) error {
	var cfg daemon.Config
	var logLevel string
	fs := pflag.NewFlagSet("daemon", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", "unix://"+api.DefaultSocket, "API socket (mode 0600) that `skbtrail trace` uses")
	fs.StringVar(&cfg.Metrics, "metrics", ":9775", "Prometheus metrics address (empty: off)")
	fs.StringVar(&cfg.Events, "events", "", "NDJSON event stream: a file (reopened on SIGHUP) or - for stdout")
	fs.BoolVar(&cfg.DropsOnly, "drops-only", false, "the event stream carries dropped packets only, not journeys traced through the API")
	fs.StringSliceVar(&cfg.IgnoreReasons, "ignore-drop-reasons", []string{"NOT_SPECIFIED", "SOCKET_CLOSE", "QUEUE_PURGE", "IPV6DISABLED"}, "kernel drop reasons the drop monitor does not report (routine frees, not packet loss)")
	fs.Float64Var(&cfg.Rate.Rate, "rate-limit", 10, "events per second per (netns, reason) in the stream (0: unlimited)")
	fs.IntVar(&cfg.Rate.Burst, "rate-burst", 50, "burst of the per-(netns, reason) rate limit")
	fs.DurationVar(&cfg.ReplyWait, "reply-wait", time.Second, "how long a delivered request waits for its reply")
	fs.StringSliceVar(&cfg.CRIEndpoints, "cri-endpoint", nil, "container runtime socket(s) used to name pods in events (default: containerd, CRI-O and cri-dockerd sockets)")
	fs.StringVar(&cfg.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's Kubernetes name (cluster mode; in a pod: NODE_NAME from the downward API)")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "kubeconfig for the API server (cluster mode; default: the pod's service account when run in a pod)")
	fs.StringVar(&cfg.ClusterListen, "cluster-listen", ":9776", "HTTPS address the API server's pod proxy reaches for `kubectl skbtrail` (callers checked with TokenReview + SubjectAccessReview); active when a Kubernetes configuration exists, empty: off")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "certificate of the cluster endpoint (default: self-signed at start)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "private key of --tls-cert")
	fs.StringSliceVar(&cfg.NodeNetns, "node-netns", nil, "labs only: observe just these network namespaces (names or glob patterns), so several lab nodes on one kernel each have their own daemon")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.BoolVar(&cfg.Pprof, "pprof", false, "serve Go profiles (/debug/pprof/) on the --metrics address, to look at the daemon's own memory and goroutines")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return exitcode.Usagef("daemon: %v", err)
	}
	if fs.NArg() > 0 {
		return exitcode.Usagef("daemon: unexpected argument %q", fs.Arg(0))
	}
	if _, err := api.SocketPath(cfg.Listen); err != nil {
		return exitcode.Usagef("daemon: %v", err)
	}
	if fs.Changed("cluster-listen") && cfg.ClusterListen != "" {
		cfg.RequireCluster = true
		if _, _, err := net.SplitHostPort(cfg.ClusterListen); err != nil {
			return exitcode.Usagef("daemon: --cluster-listen %q: want [HOST]:PORT", cfg.ClusterListen)
		}
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return exitcode.Usagef("daemon: --tls-cert and --tls-key go together")
	}
	if cfg.ClusterListen != "" && cfg.NodeName == "" && (cfg.Kubeconfig != "" || kubeclient.InCluster()) {
		return exitcode.Usagef("daemon: cluster mode needs --node-name (or NODE_NAME from the downward API)")
	}
	if cfg.Rate.Rate < 0 || cfg.Rate.Burst < 1 {
		return exitcode.Usagef("daemon: --rate-limit must be >= 0 and --rate-burst >= 1")
	}
	var lvl zap.AtomicLevel
	var err error
	if lvl, err = zap.ParseAtomicLevel(logLevel); err != nil {
		return exitcode.Usagef("daemon: --log-level %q: %v", logLevel, err)
	}
	zc := zap.NewProductionConfig()
	zc.Level = lvl
	zc.OutputPaths, zc.ErrorOutputPaths = []string{"stderr"}, []string{"stderr"}
	log, err := zc.Build()
	if err != nil {
		return fmt.Errorf("logger: %w", err)
	}
	defer log.Sync()
	cfg.Logger = log
	cfg.Version = version
	err = daemon.Run(ctx, cfg)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, trace.ErrEnvironment):
		return &exitcode.Error{Code: exitcode.Usage, Err: fmt.Errorf("daemon: %v (are you root? see `skbtrail doctor`)", err)}
	default:
		return &exitcode.Error{Code: 1, Err: fmt.Errorf("daemon: %w", err)}
	}
}
