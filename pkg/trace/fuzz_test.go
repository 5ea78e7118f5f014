package trace

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/fuzztest"
	"github.com/skbtrail/skbtrail/tracer"
)

// decided is the part of Options a request decides.
type decided struct {
	Filter       tracer.Filter
	FromNetns    string
	Timeout      time.Duration
	Count        int
	Probe        bool
	ProbeProto   string
	ProbeDst     netip.AddrPort
	ProbeSize    int
	NetfilterAll bool
}

func optionsOf(o Options) decided {
	return decided{o.Filter, o.FromNetns, o.Timeout, o.Count, o.Probe, o.ProbeProto, o.ProbeDst, o.ProbeSize, o.NetfilterAll}
}

// checkOptions checks what Validate promises about the options of r.
func checkOptions(r Request, o Options) error {
	f := o.Filter
	bad := func(what string) error { return fmt.Errorf("request %+v: %s; options %+v", r, what, optionsOf(o)) }
	for _, p := range []netip.Prefix{f.Src, f.Dst} {
		if p.IsValid() && (p.Addr().Is4In6() || p.Addr().Zone() != "" || p != p.Masked()) {
			return bad("prefix " + p.String() + " is not a masked IPv4 or IPv6 prefix")
		}
	}
	if f.Src.IsValid() && f.Dst.IsValid() && f.Src.Addr().Is4() != f.Dst.Addr().Is4() {
		return bad("source and destination of different IP versions")
	}
	v6 := f.Src.Addr().Is6() || f.Dst.Addr().Is6()
	switch {
	case o.Timeout <= 0 || o.Count < 0 || o.ProbeSize < 0 || o.ProbeSize > 65000:
		return bad("timeout, count or probe size out of range")
	case f.Proto != 0 && f.Proto != journey.ProtoTCP && f.Proto != journey.ProtoUDP && f.Proto != journey.ProtoICMP &&
		f.Proto != journey.ProtoICMPv6:
		return bad("protocol")
	case (f.Proto == journey.ProtoICMP && v6) || (f.Proto == journey.ProtoICMPv6 && (f.Src.Addr().Is4() || f.Dst.Addr().Is4())):
		return bad("ICMP of the other IP version")
	case f.SYNOnly && f.Proto != journey.ProtoTCP:
		return bad("SYN-only without tcp")
	case (f.Proto == journey.ProtoICMP || f.Proto == journey.ProtoICMPv6) && (f.Sport != 0 || f.Dport != 0):
		return bad("ports on icmp")
	case o.FromNetns != r.FromNetns:
		return bad("netns")
	case o.NetfilterAll != (r.Netfilter == NetfilterAll || (r.Netfilter == "" && r.Probe)):
		return bad("netfilter placement")
	case o.Probe != r.Probe:
		return bad("probe")
	}
	if o.Probe {
		switch {
		case !f.Dst.IsSingleIP() || o.ProbeDst.Addr() != f.Dst.Addr() || o.ProbeDst.Port() != f.Dport:
			return bad("probe destination")
		case o.ProbeProto != journey.ProtoName(f.Proto) || (o.ProbeProto != "icmp" && o.ProbeProto != "icmpv6" && f.Dport == 0):
			return bad("probe protocol or port")
		case o.ProbeProto == "tcp" && !f.SYNOnly:
			return bad("tcp probe traces more than its SYN")
		}
	}
	return nil
}

// checkValidate validates r: an error is a one-line usage error naming a
// flag; options keep Validate's promises and come back the same from the
// request sent again as JSON.
func checkValidate(r Request) (Options, error) {
	o, err := Validate(r)
	if err != nil {
		if !IsUsage(err) || strings.Contains(err.Error(), "\n") || !strings.Contains(err.Error(), "--") {
			return o, fmt.Errorf("request %+v: error %q", r, err)
		}
		return o, errInvalid
	}
	if err := checkOptions(r, o); err != nil {
		return o, err
	}
	b, err := json.Marshal(r)
	if err != nil {
		return o, fmt.Errorf("request %+v does not encode: %v", r, err)
	}
	var back Request
	if err := json.Unmarshal(b, &back); err != nil {
		return o, fmt.Errorf("request %s does not decode: %v", b, err)
	}
	o2, err := Validate(back)
	if err != nil || optionsOf(o2) != optionsOf(o) {
		return o, fmt.Errorf("request %s validates to %+v, %v; first %+v", b, optionsOf(o2), err, optionsOf(o))
	}
	return o, nil
}

var errInvalid = fmt.Errorf("invalid request")

func recordedRequests(tb testing.TB) [][]byte {
	tb.Helper()
	paths, err := filepath.Glob("testdata/request-*.json")
	if err != nil || len(paths) == 0 {
		tb.Fatalf("no testdata requests: %v", err)
	}
	var out [][]byte
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

// TestRecordedRequestsValidate: what skbtrail trace sent a daemon in the
// lab (testdata) is valid.
func TestRecordedRequestsValidate(t *testing.T) {
	for _, b := range recordedRequests(t) {
		var r Request
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if _, err := checkValidate(r); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
}

// FuzzRequest: the daemon API's trace request, any body. It decodes the
// way the API does (json.Decoder) and validates without a crash; see
// checkValidate. Seeds: requests skbtrail trace sent a daemon in the lab.
func FuzzRequest(f *testing.F) {
	for _, b := range recordedRequests(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"from_ip":"10.244.0.5","arriving":true,"to":"10.96.0.100:80","syn":true,"timeout":5000000000,"count":1,"node_addrs":{"192.0.2.10":"node-a"},"cri_endpoints":["unix:///run/containerd/containerd.sock"]}`))
	f.Add([]byte(`{"proto":"icmp","dst":"10.244.1.2","probe":true,"probe_size":1400,"netfilter":"reached","timeout":1,"count":0}`))
	f.Add([]byte(`{"to":"[10.0.0.1]:080","dst":"","sport":65535,"timeout":-1}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzztest.Bounded(t, func() error {
			var r Request
			if json.NewDecoder(bytes.NewReader(body)).Decode(&r) != nil {
				return nil
			}
			if _, err := checkValidate(r); err != nil && err != errInvalid {
				return err
			}
			_, _ = DiagnoseConfig(r)
			return nil
		})
	})
}

// FuzzFilterFlags: skbtrail trace's filter flags --src, --dst, --to,
// --proto, --sport, --dport, --syn, --probe and --netfilter. Beyond
// checkValidate: --to HOST:PORT means --dst HOST --dport PORT, and an
// address given alone is a /32 (IPv6: /128) of itself.
func FuzzFilterFlags(f *testing.F) {
	f.Add("", "", "10.96.0.100:80", "", uint16(0), uint16(0), false, true, "")
	f.Add("10.244.0.5", "", "10.96.0.10:53", "udp", uint16(0), uint16(0), false, true, "reached")
	f.Add("10.244.0.0/16", "10.96.0.0/12", "", "tcp", uint16(4000), uint16(80), true, false, "all")
	f.Add("10.244.0.5/24", "10.244.1.2", "", "icmp", uint16(0), uint16(0), false, true, "")
	f.Add("", "", "10.0.0.1", "", uint16(0), uint16(0), false, false, "")
	f.Add("", "", "10.0.0.1:0", "", uint16(0), uint16(0), false, false, "")
	f.Add("", "", "10.0.0.1:80", "", uint16(0), uint16(81), false, false, "")
	f.Add("::1", "fe80::1%eth0", "[::ffff:10.0.0.1]:80", "TCP", uint16(1), uint16(0), true, true, "everywhere")
	f.Add("fd00:10:244::/48", "", "[fd00:10:96::1]:80", "tcp", uint16(0), uint16(0), true, true, "")
	f.Add("fd00:10:244::5", "fd00:10:244:1::2", "", "icmp", uint16(0), uint16(0), false, true, "")
	f.Add("", "2001:db8::/32", "", "icmpv6", uint16(0), uint16(0), false, false, "")
	f.Add("10.244.0.5", "fd00::1", "", "udp", uint16(0), uint16(53), false, false, "")
	f.Fuzz(func(t *testing.T, src, dst, to, proto string, sport, dport uint16, syn, probe bool, netfilter string) {
		r := Request{Src: src, Dst: dst, To: to, Proto: proto, Sport: sport, Dport: dport, SYN: syn, Probe: probe,
			Netfilter: netfilter, Timeout: time.Second, Count: 1}
		fuzztest.Bounded(t, func() error { return checkFilterFlags(r) })
	})
}

func checkFilterFlags(r Request) error {
	o, err := checkValidate(r)
	if err == errInvalid {
		return nil
	}
	if err != nil {
		return err
	}
	for _, c := range []struct {
		flag, s string
		p       netip.Prefix
	}{{"--src", r.Src, o.Filter.Src}, {"--dst", r.Dst, o.Filter.Dst}} {
		if a, err := netip.ParseAddr(c.s); err == nil && (!c.p.IsSingleIP() || c.p.Addr() != a.Unmap()) {
			return fmt.Errorf("%s %q gave %v", c.flag, c.s, c.p)
		}
	}
	if r.To == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(r.To)
	if err != nil {
		return fmt.Errorf("--to %q accepted: %v", r.To, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return fmt.Errorf("--to %q accepted: %v", r.To, err)
	}
	same := r
	same.To, same.Dst, same.Dport = "", host, uint16(p)
	o2, err := Validate(same)
	if err != nil || optionsOf(o2) != optionsOf(o) {
		return fmt.Errorf("--to %q: %+v; --dst %q --dport %d: %+v, %v", r.To, optionsOf(o), host, p, optionsOf(o2), err)
	}
	return nil
}
