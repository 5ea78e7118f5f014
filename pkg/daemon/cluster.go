package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"runtime"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/pkg/api"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/kubeauth"
	"github.com/skbtrail/skbtrail/pkg/kubeclient"
	"github.com/skbtrail/skbtrail/pkg/trace"
)

// clusterLimits bound what a remote caller may ask of a node.
const (
	maxClusterTimeout = time.Minute
	maxClusterCount   = 100
)

// clusterTracer serves traces asked through the API server: the same
// engine as the local socket, with what a remote caller may not choose
// (the container runtime sockets to dial) taken from the daemon.
type clusterTracer struct {
	local api.Tracer
	cri   []string
}

func (t clusterTracer) Trace(ctx context.Context, req trace.Request, ready func(string), emit func(*journey.Journey) error) (trace.Result, error) {
	req.CRIEndpoints = t.cri
	if req.Timeout > maxClusterTimeout {
		req.Timeout = maxClusterTimeout
	}
	if req.Count <= 0 || req.Count > maxClusterCount {
		req.Count = maxClusterCount
	}
	return t.local.Trace(ctx, req, ready, emit)
}

// serveCluster starts the HTTPS endpoint the kubectl plugin reaches through
// the API server's pod proxy; every call is checked with the API server.
// It returns the server to shut down (nil when cluster mode is off).
func serveCluster(cfg Config, local api.Tracer, info api.Info, log *zap.Logger) (*http.Server, error) {
	if cfg.ClusterListen == "" {
		return nil, nil
	}
	rc, err := kubeclient.DaemonConfig(cfg.Kubeconfig)
	if errors.Is(err, kubeclient.ErrNoConfig) && !cfg.RequireCluster {
		log.Info("cluster mode off: no kubeconfig and not in a pod")
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cluster mode (--cluster-listen %s): %w", cfg.ClusterListen, err)
	}
	cs, err := kubeclient.Clientset(rc)
	if err != nil {
		return nil, err
	}
	cert, err := serverCert(cfg)
	if err != nil {
		return nil, err
	}
	guard := &kubeauth.Guard{Reviewer: kubeauth.APIReviewer{Client: cs}, OnDenied: func(status int, user, why string) {
		log.Info("cluster API call refused", zap.Int("status", status), zap.String("user", user), zap.String("why", why))
	}}
	mux := http.NewServeMux()
	mux.Handle("POST /v1/trace", guard.Require("create", api.Handler(clusterTracer{local: local, cri: cfg.CRIEndpoints})))
	mux.Handle("GET /v1/info", guard.Require("get", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(info)
	})))
	l, err := net.Listen("tcp", cfg.ClusterListen)
	if err != nil {
		return nil, fmt.Errorf("cluster listener %s: %w", cfg.ClusterListen, err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}}
	go func() {
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("cluster API server", zap.Error(err))
		}
	}()
	log.Info("cluster trace endpoint ready", zap.String("listen", cfg.ClusterListen), zap.String("node", cfg.NodeName), zap.String("api_server", rc.Host))
	return srv, nil
}

// serverCert loads --tls-cert/--tls-key or makes a self-signed certificate
// (the API server's pod proxy does not verify pod certificates; TLS keeps
// tokens and journeys off the wire in clear).
func serverCert(cfg Config) (tls.Certificate, error) {
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		c, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return c, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		return c, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls key: %w", err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "skbtrail " + cfg.NodeName},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(1, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("tls certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func newInfo(cfg Config, eng *trace.Engine) api.Info {
	return api.Info{Node: cfg.NodeName, Version: cfg.Version, Kernel: kernelRelease(), Arch: runtime.GOARCH,
		Backends: eng.Backends(), Degraded: eng.Degraded(), Netns: cfg.NodeNetns}
}
