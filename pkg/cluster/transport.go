package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/skbtrail/skbtrail/pkg/kubeauth"
	"github.com/skbtrail/skbtrail/pkg/wire"
)

// ForwardToken makes every request through the API server's pod proxy carry
// the caller's own bearer token in kubeauth.TokenHeader: the API server
// authenticates the caller and strips Authorization, and the daemon checks
// the same identity again with TokenReview + SubjectAccessReview. It works
// with whatever put the token there (a token, OIDC, an exec plugin).
func ForwardToken(c *rest.Config) *rest.Config {
	c = rest.CopyConfig(c)
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripFunc(func(r *http.Request) (*http.Response, error) {
			if strings.Contains(r.URL.Path, "/proxy/") {
				if a := r.Header.Get("Authorization"); strings.HasPrefix(a, "Bearer ") {
					r = r.Clone(r.Context())
					r.Header.Set(kubeauth.TokenHeader, a)
				}
			}
			return rt.RoundTrip(r)
		})
	})
	return c
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Caller reaches node daemons through the API server.
type Caller struct{ Client kubernetes.Interface }

func (c Caller) proxy(verb string, d Daemon, path ...string) *rest.Request {
	return c.Client.CoreV1().RESTClient().Verb(verb).Namespace(d.Namespace).Resource("pods").
		Name("https:" + d.Pod + ":" + strconv.Itoa(d.Port)).SubResource("proxy").Suffix(path...)
}

// daemonErr turns a failed proxy call into what the user reads: a refusal
// of the user's permissions stays an error; a daemon that cannot be
// reached becomes an errDaemon (the node is unobserved).
func daemonErr(d Daemon, err error) error {
	code := 0
	if s, ok := err.(apierrors.APIStatus); ok {
		code = int(s.Status().Code)
	}
	switch code {
	case http.StatusForbidden:
		return fmt.Errorf("node %s: %v (deploy/kubernetes/rbac.yaml: bind the ClusterRole skbtrail-tracer and the Role skbtrail-tracer-proxy in namespace %s)", d.Node, err, d.Namespace)
	case http.StatusUnauthorized:
		return fmt.Errorf("node %s: the daemon did not accept your credentials: %v (cluster mode forwards your bearer token to the daemon, which checks it with the API server; a kubeconfig user that authenticates with a client certificate has none: use a token, OIDC or an exec credential plugin)", d.Node, err)
	}
	return &errDaemon{why: fmt.Sprintf("daemon pod %s/%s did not answer: %v", d.Namespace, d.Pod, err)}
}

// Trace runs a trace on node d's daemon and streams its messages.
func (c Caller) Trace(ctx context.Context, d Daemon, req wire.Request, ready func(string), emit func(wire.Message) error) (wire.Done, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return wire.Done{}, err
	}
	rc, err := c.proxy(http.MethodPost, d, "v1", "trace").Body(bytes.NewReader(body)).SetHeader("Content-Type", "application/json").Stream(ctx)
	if err != nil {
		return wire.Done{}, daemonErr(d, err)
	}
	defer rc.Close()
	done, err := wire.ReadStream(rc, ready, emit)
	if err != nil {
		if _, remote := err.(*wire.RemoteError); remote {
			return done, fmt.Errorf("node %s: %w", d.Node, err)
		}
		return done, &errDaemon{why: fmt.Sprintf("daemon pod %s/%s: %v", d.Namespace, d.Pod, err)}
	}
	return done, nil
}

// Info asks node d's daemon what it is and what its kernel offers.
func (c Caller) Info(ctx context.Context, d Daemon) (wire.Info, error) {
	var info wire.Info
	raw, err := c.proxy(http.MethodGet, d, "v1", "info").DoRaw(ctx)
	if err != nil {
		return info, daemonErr(d, err)
	}
	if err := json.Unmarshal(raw, &info); err != nil {
		return info, &errDaemon{why: fmt.Sprintf("daemon pod %s/%s answered something else than its info: %v", d.Namespace, d.Pod, err)}
	}
	return info, nil
}
