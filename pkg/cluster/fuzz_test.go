package cluster

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/tests/fuzztest"
)

// format writes t the way kubectl skbtrail's --to takes it.
func format(t Target) string {
	host := t.Name
	if t.Namespace != "" {
		host += "." + t.Namespace
	}
	prefix := ""
	if t.Kind != "ip" {
		prefix = t.Kind + "/"
	}
	return prefix + net.JoinHostPort(host, t.Port)
}

// FuzzParseTarget: kubectl skbtrail trace --to, any value. A parsed
// target is a service, pod or IP address with a port (a number for pods
// and addresses) and parses back from its --to form to itself; an error
// is one line quoting the value.
func FuzzParseTarget(f *testing.F) {
	for _, s := range []string{"svc/web:80", "service/web:http", "svc/kube-dns.kube-system:53", "pod/web-0:8080",
		"pod/web-0.default:8080", "10.244.1.2:80", "[fd00::2]:80", "[fe80::1%eth0]:80", "svc/a.b.c:80", "web:80",
		"pod/web:0", "pod/web:http", "svc/web", "", "svc/web.:80", "svc/[a:b.c]:d", "pod//x:1", "ip/10.0.0.1:80"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		fuzztest.Bounded(t, func() error { return checkTarget(s) })
	})
}

func checkTarget(s string) error {
	tg, err := ParseTarget(s)
	if err != nil {
		if !strings.HasPrefix(err.Error(), "--to "+strconv.Quote(s)) || strings.Contains(err.Error(), "\n") {
			return fmt.Errorf("ParseTarget(%q): error %q", s, err)
		}
		return nil
	}
	bad := func(what string) error { return fmt.Errorf("ParseTarget(%q) = %+v: %s", s, tg, what) }
	switch tg.Kind {
	case "svc", "pod":
		if tg.Name == "" || strings.Contains(tg.Namespace, ".") {
			return bad("name")
		}
	case "ip":
		if _, err := netip.ParseAddr(tg.Name); err != nil || tg.Namespace != "" {
			return bad("address")
		}
	default:
		return bad("kind")
	}
	if tg.Port == "" {
		return bad("no port")
	}
	if n, err := strconv.ParseUint(tg.Port, 10, 16); tg.Kind != "svc" && (err != nil || n == 0) {
		return bad("port")
	}
	again, err := ParseTarget(format(tg))
	if err != nil || again != tg {
		return fmt.Errorf("ParseTarget(%q) = %+v, whose --to form %q parses to %+v, %v", s, tg, format(tg), again, err)
	}
	return nil
}
