//go:build linux

package kube

import (
	"fmt"
	"net/netip"
	"strings"
)

// Spec is a parsed pod reference: either Namespace/Name or an IP address.
type Spec struct {
	Namespace, Name string
	IP              netip.Addr // valid when the spec was a bare IP address
}

// String returns "NS/NAME" or the IP address.
func (s Spec) String() string {
	if s.IP.IsValid() {
		return s.IP.String()
	}
	return s.Namespace + "/" + s.Name
}

const specUsage = "want NAMESPACE/NAME (e.g. default/web) or the pod's IP address"

// ParseSpec parses "NAMESPACE/NAME" or a bare IP address (IPv4 or IPv6).
// Namespace and name must be valid Kubernetes names (a DNS-1123 label and
// a DNS-1123 subdomain). Errors match ErrInvalidSpec.
func ParseSpec(spec string) (Spec, error) {
	if strings.TrimSpace(spec) == "" {
		return Spec{}, newError(ErrInvalidSpec, "empty pod: %s", specUsage)
	}
	if a, err := netip.ParseAddr(spec); err == nil {
		if a.Zone() != "" {
			return Spec{}, newError(ErrInvalidSpec, "invalid pod %q: an IP address with a zone is not a pod IP", spec)
		}
		a = a.Unmap()
		switch {
		case a.IsLoopback(), a.IsUnspecified(), a.IsMulticast(), a.IsLinkLocalMulticast(), a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
			return Spec{}, newError(ErrInvalidSpec, "invalid pod %q: not a pod IP address; %s", spec, specUsage)
		}
		return Spec{IP: a}, nil
	}
	parts := strings.Split(spec, "/")
	switch {
	case len(parts) == 1:
		hint := ""
		if validName(spec) == "" {
			hint = fmt.Sprintf(" (did you mean default/%s?)", spec)
		}
		return Spec{}, newError(ErrInvalidSpec, "invalid pod %q: %s%s", spec, specUsage, hint)
	case len(parts) > 2:
		return Spec{}, newError(ErrInvalidSpec, "invalid pod %q: %s (too many \"/\")", spec, specUsage)
	}
	ns, name := parts[0], parts[1]
	if ns == "" || name == "" {
		return Spec{}, newError(ErrInvalidSpec, "invalid pod %q: %s (empty namespace or name)", spec, specUsage)
	}
	if _, err := netip.ParsePrefix(spec); err == nil {
		return Spec{}, newError(ErrInvalidSpec, "invalid pod %q: a prefix is not a pod; %s", spec, specUsage)
	}
	if why := validLabel(ns); why != "" {
		return Spec{}, newError(ErrInvalidSpec, "invalid pod %q: namespace %q %s", spec, ns, why)
	}
	if why := validName(name); why != "" {
		return Spec{}, newError(ErrInvalidSpec, "invalid pod %q: name %q %s", spec, name, why)
	}
	return Spec{Namespace: ns, Name: name}, nil
}

// validLabel checks a DNS-1123 label (a Kubernetes namespace name) and
// returns why it is not one, or "".
func validLabel(s string) string {
	if len(s) > 63 {
		return "is longer than 63 characters"
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return "is not a valid Kubernetes name (lowercase letters, digits and '-', starting and ending with a letter or digit)"
		}
	}
	return ""
}

// validName checks a DNS-1123 subdomain (a Kubernetes pod name) and returns
// why it is not one, or "".
func validName(s string) string {
	if s == "" {
		return "is empty"
	}
	if len(s) > 253 {
		return "is longer than 253 characters"
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || validLabel(l) != "" {
			return "is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit)"
		}
	}
	return ""
}
