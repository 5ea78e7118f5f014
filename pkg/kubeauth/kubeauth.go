// Package kubeauth protects a node daemon's network endpoint with the
// Kubernetes API server, the way kube-rbac-proxy does: the caller's bearer
// token is checked with a TokenReview (who is it?) and the user with a
// SubjectAccessReview (may they do this?). An unauthenticated caller gets
// 401, an unauthorized one 403, and neither learns anything else.
package kubeauth

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The permission the daemons check: verbs on traces.skbtrail.io, a
// resource that exists only as a name to grant (deploy/kubernetes/rbac.yaml).
const (
	Group    = "skbtrail.io"
	Resource = "traces"
)

// TokenHeader carries the caller's token through the API server's pod proxy,
// which authenticates the caller itself and strips Authorization before
// forwarding. A direct caller may use Authorization: Bearer.
const TokenHeader = "X-Skbtrail-Authorization"

// Reviewer asks the API server about tokens and permissions.
type Reviewer interface {
	// Review authenticates token and reports whether its user may verb
	// traces.skbtrail.io; user names the caller for the logs and errors.
	Review(ctx context.Context, token, verb string) (user string, authenticated, allowed bool, err error)
}

// APIReviewer is a Reviewer backed by the API server.
type APIReviewer struct{ Client kubernetes.Interface }

// Review implements Reviewer with a TokenReview and a SubjectAccessReview.
func (r APIReviewer) Review(ctx context.Context, token, verb string) (string, bool, bool, error) {
	tr, err := r.Client.AuthenticationV1().TokenReviews().Create(ctx,
		&authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return "", false, false, fmt.Errorf("token review: %w", err)
	}
	if !tr.Status.Authenticated {
		return "", false, false, nil
	}
	u := tr.Status.User
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	sar, err := r.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{Spec: authzv1.SubjectAccessReviewSpec{
		User: u.Username, Groups: u.Groups, UID: u.UID, Extra: extra,
		ResourceAttributes: &authzv1.ResourceAttributes{Group: Group, Resource: Resource, Verb: verb},
	}}, metav1.CreateOptions{})
	if err != nil {
		return u.Username, true, false, fmt.Errorf("subject access review: %w", err)
	}
	return u.Username, true, sar.Status.Allowed, nil
}

// Guard wraps handlers with the check; answers are cached for TTL per
// (token, verb) so a burst of calls costs one review.
type Guard struct {
	Reviewer Reviewer
	TTL      time.Duration // default 10s
	Now      func() time.Time
	// OnDenied, when set, is told of every refused call (for the log).
	OnDenied func(status int, user, why string)

	mu    sync.Mutex
	cache map[[32]byte]decision
}

type decision struct {
	user    string
	authn   bool
	allowed bool
	until   time.Time
}

// maxCache bounds the cache; a full cache starts over.
const maxCache = 1024

// Token extracts the caller's bearer token ("" when none).
func Token(r *http.Request) string {
	for _, h := range []string{TokenHeader, "Authorization"} {
		v := r.Header.Get(h)
		if t, ok := strings.CutPrefix(v, "Bearer "); ok && strings.TrimSpace(t) != "" {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

func (g *Guard) decide(ctx context.Context, token, verb string) (decision, error) {
	now := time.Now
	if g.Now != nil {
		now = g.Now
	}
	ttl := g.TTL
	if ttl == 0 {
		ttl = 10 * time.Second
	}
	key := sha256.Sum256([]byte(verb + "\x00" + token))
	g.mu.Lock()
	d, ok := g.cache[key]
	g.mu.Unlock()
	if ok && now().Before(d.until) {
		return d, nil
	}
	user, authn, allowed, err := g.Reviewer.Review(ctx, token, verb)
	if err != nil {
		return decision{}, err
	}
	d = decision{user: user, authn: authn, allowed: allowed, until: now().Add(ttl)}
	g.mu.Lock()
	if g.cache == nil || len(g.cache) >= maxCache {
		g.cache = map[[32]byte]decision{}
	}
	g.cache[key] = d
	g.mu.Unlock()
	return d, nil
}

// Require serves next only to callers allowed to verb traces.skbtrail.io.
func (g *Guard) Require(verb string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		deny := func(status int, user, why string) {
			if g.OnDenied != nil {
				g.OnDenied(status, user, why)
			}
			http.Error(w, why, status)
		}
		token := Token(r)
		if token == "" {
			deny(http.StatusUnauthorized, "", "unauthorized: a Kubernetes bearer token is required ("+TokenHeader+" or Authorization header)")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		d, err := g.decide(ctx, token, verb)
		switch {
		case err != nil:
			deny(http.StatusServiceUnavailable, "", "cannot check the caller with the API server: "+err.Error())
		case !d.authn:
			deny(http.StatusUnauthorized, "", "unauthorized: the API server did not accept the token")
		case !d.allowed:
			deny(http.StatusForbidden, d.user, fmt.Sprintf("forbidden: user %q cannot %s %s.%s (bind the ClusterRole skbtrail-tracer)", d.user, verb, Resource, Group))
		default:
			next.ServeHTTP(w, r)
		}
	})
}
