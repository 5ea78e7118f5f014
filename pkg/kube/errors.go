//go:build linux

package kube

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// Error kinds. Every error returned by Resolve matches (errors.Is) exactly
// one of them, except for a cancelled or expired context.
var (
	// ErrInvalidSpec: the pod reference is neither NS/NAME nor an IP
	// address (a usage error).
	ErrInvalidSpec = errors.New("invalid pod")
	// ErrNotFound: no pod (or, for an IP, no network namespace) matches.
	ErrNotFound = errors.New("pod not found")
	// ErrNotRunning: the pod exists on this node but its sandbox is not
	// ready (or its network namespace is gone).
	ErrNotRunning = errors.New("pod not running")
	// ErrAmbiguous: several pods or sandboxes match.
	ErrAmbiguous = errors.New("several pods match")
	// ErrNoRuntime: no container runtime answered and the CNI cache does
	// not know the pod.
	ErrNoRuntime = errors.New("no container runtime reachable")
	// ErrNoNetns: the pod was found but its network namespace cannot be
	// opened.
	ErrNoNetns = errors.New("pod network namespace not reachable")
)

// kubeError is a one-line error message of one of the kinds above.
type kubeError struct {
	kind error
	msg  string
}

func (e *kubeError) Error() string        { return e.msg }
func (e *kubeError) Is(target error) bool { return target == e.kind }

func newError(kind error, format string, args ...any) error {
	return &kubeError{kind: kind, msg: fmt.Sprintf(format, args...)}
}

// suggest returns up to n of the "NS/NAME" candidates nearest to want,
// nearest first (ties by name): the same name in another namespace, then
// plausible typos of the name (small edit distance, or one name a prefix of
// the other). Anything else is left out.
func suggest(want string, candidates []string, n int) []string {
	type cand struct {
		name  string
		score int
	}
	_, wantName, _ := strings.Cut(want, "/")
	seen := map[string]bool{}
	var cs []cand
	for _, c := range candidates {
		if c == want || seen[c] {
			continue
		}
		seen[c] = true
		_, cName, _ := strings.Cut(c, "/")
		score := levenshtein(want, c)
		switch {
		case cName == wantName:
			score = 1
		case levenshtein(wantName, cName) <= max(1, len(wantName)/3):
		case len(wantName) >= 3 && len(cName) >= 3 && (strings.HasPrefix(cName, wantName) || strings.HasPrefix(wantName, cName)):
		default:
			continue
		}
		cs = append(cs, cand{c, score})
	}
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].score != cs[j].score {
			return cs[i].score < cs[j].score
		}
		return cs[i].name < cs[j].name
	})
	if len(cs) > n {
		cs = cs[:n]
	}
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.name
	}
	return out
}

// levenshtein returns the edit distance between a and b (bytes).
func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// didYouMean formats suggestions as "; did you mean a, b or c?" or "".
func didYouMean(s []string) string {
	switch len(s) {
	case 0:
		return ""
	case 1:
		return "; did you mean " + s[0] + "?"
	}
	return "; did you mean " + strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1] + "?"
}

// shortID abbreviates a container/sandbox id like crictl does.
func shortID(id string) string {
	if len(id) > 13 {
		return id[:13]
	}
	return id
}

// plural returns word or word+"s".
func plural(n int, word string) string {
	if n == 1 {
		return word
	}
	return word + "s"
}
