package kubeauth

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// apiFake answers TokenReviews and SubjectAccessReviews like an API server
// that knows two tokens and lets only "alice" create traces.
func apiFake(calls *int) *fake.Clientset {
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		*calls++
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		switch tr.Spec.Token {
		case "alice-token":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "alice", Groups: []string{"devs"}}}
		case "bob-token":
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "bob"}}
		}
		return true, tr, nil
	})
	cs.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		ra := sar.Spec.ResourceAttributes
		sar.Status.Allowed = sar.Spec.User == "alice" && ra.Group == Group && ra.Resource == Resource && ra.Verb == "create"
		return true, sar, nil
	})
	return cs
}

func TestGuard(t *testing.T) {
	calls := 0
	var denied []string
	g := &Guard{Reviewer: APIReviewer{Client: apiFake(&calls)}, OnDenied: func(status int, user, why string) { denied = append(denied, user) }}
	h := g.Require("create", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("secret")) }))
	for _, c := range []struct {
		header, value string
		status        int
		body          string
	}{
		{"", "", http.StatusUnauthorized, "bearer token is required"},
		{"Authorization", "Basic abc", http.StatusUnauthorized, "bearer token is required"},
		{TokenHeader, "Bearer nobody-knows", http.StatusUnauthorized, "did not accept the token"},
		{TokenHeader, "Bearer bob-token", http.StatusForbidden, `user "bob" cannot create traces.skbtrail.io`},
		{TokenHeader, "Bearer alice-token", http.StatusOK, "secret"},
		{"Authorization", "Bearer alice-token", http.StatusOK, "secret"},
	} {
		r := httptest.NewRequest(http.MethodPost, "/v1/trace", nil)
		if c.header != "" {
			r.Header.Set(c.header, c.value)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != c.status || !strings.Contains(w.Body.String(), c.body) {
			t.Errorf("%s: %q -> %d %q, want %d with %q", c.header, c.value, w.Code, w.Body.String(), c.status, c.body)
		}
		if w.Code != http.StatusOK && strings.Contains(w.Body.String(), "secret") {
			t.Errorf("a refused caller learned the answer")
		}
	}
	if calls != 3 {
		t.Errorf("%d token reviews, want 3 (alice's second call is cached)", calls)
	}
	if len(denied) != 4 || denied[3] != "bob" {
		t.Errorf("denials told: %q", denied)
	}
}

func TestGuardCacheExpires(t *testing.T) {
	calls := 0
	now := time.Unix(1000, 0)
	g := &Guard{Reviewer: APIReviewer{Client: apiFake(&calls)}, TTL: time.Second, Now: func() time.Time { return now }}
	for i := 0; i < 3; i++ {
		if _, err := g.decide(context.Background(), "alice-token", "create"); err != nil {
			t.Fatal(err)
		}
		now = now.Add(600 * time.Millisecond)
	}
	if calls != 2 {
		t.Errorf("%d reviews over 1.8 s with a 1 s TTL, want 2", calls)
	}
	if _, err := g.decide(context.Background(), "alice-token", "get"); err != nil || calls != 3 {
		t.Errorf("another verb must be reviewed on its own (calls %d, err %v)", calls, err)
	}
}
