package diagnose

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/sockdiag"
)

func sock(proto, addr string) sockdiag.Socket {
	return sockdiag.Socket{Proto: proto, Local: netip.MustParseAddrPort(addr)}
}

func TestListenerHint(t *testing.T) {
	dst := netip.MustParseAddrPort("10.244.1.2:80")
	cases := []struct {
		name         string
		socks        []sockdiag.Socket
		what, advice []string
		proto        string
	}{
		{"loopback only", []sockdiag.Socket{sock("tcp", "127.0.0.1:80"), sock("tcp", "0.0.0.0:9090")}, []string{"loopback only (127.0.0.1:80)"}, []string{"0.0.0.0:80", "10.244.1.2:80", "instead of 127.0.0.1:80"}, "tcp"},
		{"ipv6 loopback", []sockdiag.Socket{sock("tcp", "[::1]:80")}, []string{"loopback only ([::1]:80)"}, []string{"0.0.0.0:80"}, "tcp"},
		{"another address", []sockdiag.Socket{sock("tcp", "10.244.9.9:80")}, []string{"on 10.244.9.9:80, not on 10.244.1.2"}, []string{"0.0.0.0:80"}, "tcp"},
		{"other protocol", []sockdiag.Socket{sock("udp", "0.0.0.0:80")}, []string{"udp socket is bound to 0.0.0.0:80"}, []string{"UDP"}, "tcp"},
		{"other ports, nearest first", []sockdiag.Socket{sock("tcp", "0.0.0.0:9000"), sock("tcp", "0.0.0.0:8080"), sock("tcp", "10.244.1.2:81"), sock("udp", "0.0.0.0:53")},
			[]string{"nothing listens on tcp port 80", "10.244.1.2:81, 0.0.0.0:8080, 0.0.0.0:9000"}, []string{"targetPort", "(81)"}, "tcp"},
		{"nothing", []sockdiag.Socket{sock("udp", "0.0.0.0:53")}, []string{"no tcp socket listens in the namespace at all"}, []string{"not running"}, "tcp"},
		{"listens now", []sockdiag.Socket{sock("tcp", "0.0.0.0:80")}, []string{"listens on 0.0.0.0:80 now"}, []string{"restarts"}, "tcp"},
		{"udp nothing", nil, []string{"no udp socket"}, []string{"0.0.0.0:80"}, "udp"},
	}
	for _, c := range cases {
		what, advice := listenerHint(c.socks, c.proto, dst)
		for _, w := range c.what {
			if !strings.Contains(what, w) {
				t.Errorf("%s: %q lacks %q", c.name, what, w)
			}
		}
		for _, w := range c.advice {
			if !strings.Contains(advice, w) {
				t.Errorf("%s: advice %q lacks %q", c.name, advice, w)
			}
		}
	}
}

// A refused SYN: NO_LISTENER carries what listens in the pod, from the
// namespace's sockets; without them the finding is the plain one.
func TestNoListenerNamesListeners(t *testing.T) {
	syn := tcp("10.244.0.5", "10.244.1.2", 4000, 80)
	journeyOf := func() *journey.Journey {
		j := build(t, ev(journey.KindTx, podA, "eth0", syn), ev(journey.KindRx, podB, "eth0", syn),
			ev(journey.KindDrop, podB, "eth0", syn, func(e *journey.Event) { e.Reason = 2 }))
		j.Verdict.Kind = journey.Rejected
		return j
	}
	d := New(Config{})
	d.sockets = func(ino uint32) ([]sockdiag.Socket, error) {
		if ino != podB {
			t.Errorf("sockets of netns %d, want pod-b's", ino)
		}
		return []sockdiag.Socket{sock("tcp", "127.0.0.1:80")}, nil
	}
	j := journeyOf()
	d.Diagnose(j)
	if len(j.Findings) == 0 || j.Findings[0].Code != CodeNoListener {
		t.Fatalf("findings %+v", j.Findings)
	}
	if f := j.Findings[0]; !strings.Contains(f.Message, "loopback only (127.0.0.1:80)") || !strings.Contains(f.Advice, "0.0.0.0:80") {
		t.Errorf("finding %+v", f)
	}
	d.sockets = func(uint32) ([]sockdiag.Socket, error) { return nil, errors.New("netns gone") }
	j = journeyOf()
	d.Diagnose(j)
	if f := j.Findings[0]; f.Code != CodeNoListener || strings.Contains(f.Message, ";") {
		t.Errorf("without sockets: finding %+v, want the plain NO_LISTENER", f)
	}
}

func addrPort(s string) netip.AddrPort { return netip.MustParseAddrPort(s) }

// An IPv6 request to a server on [::1] only: the advice is IPv6's.
func TestListenerHintIPv6Loopback(t *testing.T) {
	what, advice := listenerHint([]sockdiag.Socket{sock("tcp", "[::1]:80")}, "tcp", netip.MustParseAddrPort("[fd00:10:244:1::2]:80"))
	if !strings.Contains(what, "loopback only ([::1]:80)") {
		t.Errorf("what %q", what)
	}
	for _, w := range []string{"all addresses ([::]:80)", "pod address [fd00:10:244:1::2]:80 instead of [::1]:80", "--host ::)"} {
		if !strings.Contains(advice, w) {
			t.Errorf("advice %q lacks %q", advice, w)
		}
	}
}
