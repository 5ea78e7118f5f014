// Package daemon is skbtrail's node service: the programs loaded once,
// always-on drop monitoring into an NDJSON stream and Prometheus metrics,
// and the local API that runs `skbtrail trace` requests on the same
// programs.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/skbtrail/skbtrail/pkg/api"
	"github.com/skbtrail/skbtrail/pkg/events"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/metrics"
	"github.com/skbtrail/skbtrail/pkg/pipeline"
	"github.com/skbtrail/skbtrail/pkg/trace"
	"github.com/skbtrail/skbtrail/tracer"
)

// Config configures the daemon.
type Config struct {
	Listen        string // unix:///run/skbtrail/skbtrail.sock
	Metrics       string // :9775; "" disables
	Events        string // file, "-" for stdout, "" for none
	DropsOnly     bool   // the stream carries drops only, not traced journeys
	IgnoreReasons []string
	// Pprof serves net/http/pprof's profiles on the metrics address.
	Pprof        bool
	Rate         events.Limit
	ReplyWait    time.Duration
	CRIEndpoints []string // container runtime sockets for pod names (nil: defaults)
	Logger       *zap.Logger
	Version      string

	// Cluster mode (kubectl skbtrail): the node's name, the API server
	// configuration (a kubeconfig, else the pod's service account), the
	// HTTPS address the API server's pod proxy reaches ("" disables) and
	// its certificate (self-signed when not given).
	NodeName      string
	Kubeconfig    string
	ClusterListen string
	TLSCert       string
	TLSKey        string
	// RequireCluster: --cluster-listen was given explicitly, so a missing
	// Kubernetes configuration is an error, not "cluster mode off".
	RequireCluster bool
	// NodeNetns limits the daemon to these namespaces (names or path.Match
	// patterns): several lab nodes on one kernel. nil: every namespace.
	NodeNetns []string
}

// Run serves until ctx ends (SIGTERM/SIGINT), then detaches everything and
// removes the socket.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	sock, err := api.SocketPath(cfg.Listen)
	if err != nil {
		return err
	}
	m := metrics.New()
	var stream *events.Stream
	if cfg.Events != "" {
		if stream, err = events.Open(cfg.Events, cfg.Rate); err != nil {
			return err
		}
		defer stream.Close()
		stream.OnSuppressed = m.Suppressed
	}
	pods := trace.NewPodIndex(cfg.CRIEndpoints)
	var eng *trace.Engine // set below, before any journey can reach a queue
	queueCtx, stopQueues := context.WithCancel(context.Background())
	streamQ := newQueue[*journey.Journey](streamQueueLen)
	write := func(j *journey.Journey) {
		if stream == nil {
			return
		}
		streamQ.put(j) // written on the queue's goroutine, never the processor's
	}
	go streamQ.run(queueCtx, func(j *journey.Journey) {
		j.ResolveNames(eng.Name)
		j.Normalize()
		j.LabelPods(pods.Pod)
		if _, err := stream.Write(j); err != nil {
			log.Error("write event stream", zap.Error(err))
		}
	})
	metricsQ := newQueue[metrics.Outcome](metricsQueueLen)
	go metricsQ.run(queueCtx, func(o metrics.Outcome) {
		m.Observe(chargePod(o, eng.Name, pods))
	})
	defer func() { stopQueues(); <-streamQ.done; <-metricsQ.done }() // before the stream closes
	m.CounterFunc("skbtrail_stream_queue_dropped_total", "Journeys not written to the event stream because its queue was full (a slow disk).", streamQ.dropped.Load)
	m.CounterFunc("skbtrail_metrics_queue_dropped_total", "Finished journeys not counted in the metrics because their queue was full.", metricsQ.dropped.Load)
	eng, err = trace.NewEngine(trace.EngineConfig{
		Settings:      tracer.Settings{DropMonitor: true},
		IgnoreReasons: cfg.IgnoreReasons,
		Netfilter:     true,
		OnDemand:      true, // per-packet programs only while a trace runs
		ReplyWait:     cfg.ReplyWait,
		Observe:       func(j *journey.Journey) { metricsQ.put(metrics.OutcomeOf(j)) }, // a copy: counted off the processor
		Unclaimed:     write,
		OnLost:        m.Lost,
		NetnsScope:    cfg.NodeNetns,
		Logger:        log,
	})
	if err != nil {
		return err
	}
	exportLosses(m, eng)
	defer func() {
		if err := eng.Close(); err != nil {
			log.Warn("detach programs", zap.Error(err))
		}
	}()

	l, err := api.Listen(sock)
	if err != nil {
		return err
	}
	defer os.Remove(sock)
	local := &engineTracer{eng: eng, stream: write, dropsOnly: cfg.DropsOnly}
	apiSrv := &http.Server{Handler: api.Handler(local), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := apiSrv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("API server", zap.Error(err))
		}
	}()
	clusterSrv, err := serveCluster(cfg, local, newInfo(cfg, eng), log)
	if err != nil {
		_ = apiSrv.Close()
		return err
	}
	var metricsSrv *http.Server
	if cfg.Metrics != "" {
		ml, err := net.Listen("tcp", cfg.Metrics)
		if err != nil {
			return fmt.Errorf("metrics listener %s: %w", cfg.Metrics, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", m.Handler())
		if cfg.Pprof {
			// profiles of the daemon itself (memory, goroutines), on the
			// metrics address only when asked for
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		}
		metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := metricsSrv.Serve(ml); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics server", zap.Error(err))
			}
		}()
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				if stream != nil {
					if err := stream.Reopen(); err != nil {
						log.Error("reopen event stream", zap.Error(err))
					} else {
						log.Info("event stream reopened")
					}
				}
			}
		}
	}()
	go func() {
		t := time.NewTicker(pods.MaxAge)
		defer t.Stop()
		for {
			pods.Refresh(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	go forgetVanished(ctx, eng, m, stream, pods, log)
	log.Info("skbtrail daemon ready", zap.String("socket", sock), zap.String("metrics", cfg.Metrics), zap.String("events", cfg.Events))
	notifyReady(log)
	// loading the programs (kernel BTF, verifier logs) left tens of MB of
	// garbage: return it to the OS in one go now, rather than letting the
	// background scavenger do it page by page over minutes (each of its
	// madvise calls flushes every CPU's TLB: most of an idle daemon's CPU)
	debug.FreeOSMemory()
	runErr := eng.Run(ctx)
	shut, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	_ = apiSrv.Shutdown(shut)
	if clusterSrv != nil {
		_ = clusterSrv.Shutdown(shut)
	}
	if metricsSrv != nil {
		_ = metricsSrv.Shutdown(shut)
	}
	return runErr
}

// exportLosses exports every counter of events that never reached a
// journey, by where they were lost.
func exportLosses(m *metrics.Metrics, eng *trace.Engine) {
	for _, c := range []struct {
		name, help string
		read       func(pipeline.Counters) uint64
	}{
		{"skbtrail_ringbuf_full_total", "Events the kernel could not put in the ring buffer (it was full).", func(c pipeline.Counters) uint64 { return c.RingbufFull }},
		{"skbtrail_tracked_map_full_total", "Skbs the kernel could not start following (the tracked-skb map was full).", func(c pipeline.Counters) uint64 { return c.TrackedFull }},
		{"skbtrail_drop_monitor_shed_total", "Drop-monitor events left out during a drop storm (ring buffer or processor over half full) so that traces keep their room.", func(c pipeline.Counters) uint64 { return c.MonitorShed }},
		{"skbtrail_channel_overflow_total", "Events the reader could not hand to the processor (its channel was full).", func(c pipeline.Counters) uint64 { return c.Overflow }},
		{"skbtrail_malformed_records_total", "Ring buffer records that did not decode.", func(c pipeline.Counters) uint64 { return c.Malformed }},
		{"skbtrail_late_events_total", "Events that arrived for journeys already closed.", func(c pipeline.Counters) uint64 { return c.Late }},
	} {
		read := c.read
		m.CounterFunc(c.name, c.help, func() uint64 { return read(eng.Counters()) })
	}
}

// sweepEvery is how often the daemon forgets the per-namespace state
// (metric series, rate-limit buckets) of namespaces that vanished.
const sweepEvery = 30 * time.Second

// forgetVanished keeps per-namespace state bounded by the namespaces that
// exist: pods come and go by the thousand over a daemon's life.
// churnForget is how many vanished namespaces one sweep must forget for
// the daemon to return freed memory to the OS at once.
const churnForget = 100

func forgetVanished(ctx context.Context, eng *trace.Engine, m *metrics.Metrics, stream *events.Stream, pods *trace.PodIndex, log *zap.Logger) {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := eng.Registry.Refresh(); err != nil {
			log.Debug("rescan namespaces", zap.Error(err))
		}
		live := map[string]bool{}
		for _, e := range eng.Registry.All() {
			live[e.Name] = true
		}
		isLive := func(ns string) bool { return live[ns] }
		if n := m.Forget(isLive); n > 0 {
			log.Debug("forgot the metric series of vanished namespaces", zap.Int("namespaces", n))
			if n >= churnForget {
				// a burst of pods came and went: give the memory their
				// state held back to the OS now, not over minutes
				debug.FreeOSMemory()
			}
		}
		if stream != nil {
			stream.Forget(isLive)
		}
		// the pod series of pods gone from the node (only when the last
		// runtime query listed every pod: a runtime hiccup forgets nothing)
		if n := m.ForgetPods(func(pod string) bool { live, known := pods.Live(pod); return live || !known }); n > 0 {
			log.Debug("forgot the metric series of pods gone from the node", zap.Int("pods", n))
		}
	}
}

// podLookup is what charging a drop to a pod needs of the pod index.
type podLookup interface {
	Pod(netnsInode uint32) (name, id string)
	PodByIP(ip string) string
}

// chargePod names o's namespace and the pod its drop is charged to: the pod
// the packet was dropped in, else the pod that sent it, else the pod it was
// sent to.
func chargePod(o metrics.Outcome, name func(ino uint32) string, pods podLookup) metrics.Outcome {
	if strings.HasPrefix(o.Netns, "ino:") {
		if n := name(o.NetnsInode); n != "" {
			o.Netns = n
		}
	}
	if o.Verdict != journey.Dropped && o.Verdict != journey.Rejected {
		return o
	}
	if o.Pod, _ = pods.Pod(o.NetnsInode); o.Pod == "" {
		if o.Pod = pods.PodByIP(o.Src); o.Pod == "" {
			o.Pod = pods.PodByIP(o.Dst)
		}
	}
	return o
}

// notifyReady tells systemd (Type=notify) that the daemon is up.
func notifyReady(log *zap.Logger) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		log.Warn("sd_notify", zap.Error(err))
		return
	}
	defer c.Close()
	if _, err := c.Write([]byte("READY=1")); err != nil {
		log.Warn("sd_notify", zap.Error(err))
	}
}

// engineTracer serves API trace requests on the daemon's engine.
type engineTracer struct {
	eng       *trace.Engine
	stream    func(*journey.Journey)
	dropsOnly bool
}

func (t *engineTracer) Trace(ctx context.Context, req trace.Request, ready func(string), emit func(*journey.Journey) error) (trace.Result, error) {
	return t.eng.TraceRequest(ctx, req, ready, func(j *journey.Journey) error {
		if !t.dropsOnly {
			t.stream(j.Clone()) // labelled and written on the stream's goroutine
		}
		return emit(j)
	})
}
