package trace

import (
	"github.com/skbtrail/skbtrail/pkg/journey"
	"strings"
	"testing"
	"time"
)

func TestRequestNetfilterPlacement(t *testing.T) {
	base := Request{To: "10.96.0.10:80", Timeout: time.Second, Count: 1}
	cases := []struct {
		netfilter string
		probe     bool
		all       bool
		err       string
	}{
		{"", false, false, ""}, // passive: observers join namespaces as packets reach them
		{"", true, true, ""},   // a probe's one packet must meet every observer
		{"reached", true, false, ""},
		{"all", false, true, ""},
		{"everywhere", false, false, `--netfilter "everywhere": want reached or all`},
	}
	for _, c := range cases {
		r := base
		r.Netfilter, r.Probe = c.netfilter, c.probe
		o, err := Validate(r)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !IsUsage(err) {
				t.Errorf("%q probe=%v: error %v, want usage error %q", c.netfilter, c.probe, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q probe=%v: %v", c.netfilter, c.probe, err)
		}
		if o.NetfilterAll != c.all {
			t.Errorf("%q probe=%v: NetfilterAll %v, want %v", c.netfilter, c.probe, o.NetfilterAll, c.all)
		}
	}
}

func TestRequestErrors(t *testing.T) {
	for _, c := range []struct {
		r   Request
		err string
	}{
		{Request{To: "10.0.0.1", Timeout: time.Second}, "want HOST:PORT"},
		{Request{To: "10.0.0.1:0", Timeout: time.Second}, "port must be 1-65535"},
		{Request{To: "10.0.0.1:80", Dport: 81, Timeout: time.Second}, "cannot be combined"},
		{Request{To: "10.0.0.1:80"}, "--timeout must be positive"},
		{Request{Proto: "icmp", Dport: 1, Timeout: time.Second}, "ports make no sense"},
		{Request{Probe: true, Dst: "10.0.0.0/24", Dport: 1, Timeout: time.Second}, "--probe needs a destination address"},
		{Request{Probe: true, Dst: "fd00::/64", Dport: 1, Timeout: time.Second}, "--probe needs a destination address"},
		{Request{To: "fd00::1:80", Timeout: time.Second}, "IPv6 as [ADDR]:PORT"},
		{Request{Src: "10.244.0.5", Dst: "fd00::1", Timeout: time.Second}, "one is IPv4, the other IPv6"},
		{Request{Dst: "fe80::1%eth0", Timeout: time.Second}, "want an IPv4 or IPv6 address"},
		{Request{Dst: "10.0.0.1", Proto: "icmpv6", Timeout: time.Second}, "want icmp"},
	} {
		if _, err := Validate(c.r); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%+v: error %v, want %q", c.r, err, c.err)
		}
	}
}

func TestDiagnoseConfigFlannel(t *testing.T) {
	c, err := DiagnoseConfig(Request{FlannelSubnetFiles: []string{"/run/flannel/subnet.env", "lab-node-b=/tmp/b.env"},
		FlannelEtcd: []string{"http://203.0.113.250:2379"}, FlannelEtcdNetns: "lab-etcd"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Flannel.SubnetFiles["host"] != "/run/flannel/subnet.env" || c.Flannel.SubnetFiles["lab-node-b"] != "/tmp/b.env" ||
		len(c.Flannel.EtcdEndpoints) != 1 || c.Flannel.EtcdNetns != "lab-etcd" {
		t.Errorf("got %+v", c.Flannel)
	}
	for _, r := range []Request{
		{FlannelSubnetFiles: []string{"relative.env"}},
		{FlannelSubnetFiles: []string{"ns="}},
		{FlannelEtcd: []string{"203.0.113.250:2379"}},
		{FlannelEtcdPrefix: "coreos.com"},
		{FlannelEtcdNetns: "lab-etcd"},
	} {
		_, err := DiagnoseConfig(r)
		if err == nil || !strings.Contains(err.Error(), "--flannel-") || strings.Contains(err.Error(), "\n") {
			t.Errorf("%+v: want a one-line error naming the flag, got %v", r, err)
		}
	}
}

func TestRequestIPv6(t *testing.T) {
	o, err := Validate(Request{To: "[fd00:10:96::a]:80", Src: "fd00:10:244::/48", SYN: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if o.Filter.Dst.String() != "fd00:10:96::a/128" || o.Filter.Dport != 80 || o.Filter.Src.String() != "fd00:10:244::/48" ||
		o.Filter.Proto != journey.ProtoTCP {
		t.Errorf("filter %+v", o.Filter)
	}
	o, err = Validate(Request{Dst: "fd00:10:244:1::2", Proto: "icmp", Probe: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if o.Filter.Proto != journey.ProtoICMPv6 || o.ProbeProto != "icmpv6" || o.ProbeDst.Addr().String() != "fd00:10:244:1::2" {
		t.Errorf("icmp probe to IPv6: %+v", o)
	}
	o, err = Validate(Request{Dst: "::ffff:10.0.0.1", Timeout: time.Second})
	if err != nil || o.Filter.Dst.String() != "10.0.0.1/32" {
		t.Errorf("IPv4-mapped --dst: %v, %v", o.Filter.Dst, err)
	}
}
