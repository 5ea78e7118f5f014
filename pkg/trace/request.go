package trace

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/diagnose"
	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/wire"
	"github.com/skbtrail/skbtrail/tracer"
)

// Request is a trace as a user asks for it (flags, or the daemon API's
// JSON); Validate checks it. The type lives in pkg/wire, which the kubectl
// plugin shares without the tracer.
type Request = wire.Request

// parsePrefix reads an IPv4 or IPv6 address or prefix (an IPv4-mapped IPv6
// address stands for its IPv4 address).
func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if p.Addr().Zone() != "" {
			return p, fmt.Errorf("%s: zones are not traced", s)
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return p, fmt.Errorf("%s: an IPv4-mapped prefix needs at least 96 bits", s)
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("%s: zones are not traced", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// ParseProto names tcp, udp, icmp or icmpv6 as an IP protocol number
// (icmp to an IPv6 address is made icmpv6 by Validate).
func ParseProto(s string) (uint8, error) {
	switch strings.ToLower(s) {
	case "":
		return 0, nil
	case "tcp":
		return journey.ProtoTCP, nil
	case "udp":
		return journey.ProtoUDP, nil
	case "icmp":
		return journey.ProtoICMP, nil
	case "icmpv6", "icmp6":
		return journey.ProtoICMPv6, nil
	}
	return 0, fmt.Errorf("--proto %q: want tcp, udp, icmp or icmpv6", s)
}

// isICMP reports whether proto is ICMP of either IP version.
func isICMP(proto uint8) bool { return proto == journey.ProtoICMP || proto == journey.ProtoICMPv6 }

// MaxSnaplen is the most packet bytes a trace can keep per hop.
const MaxSnaplen = tracer.MaxSnaplen

// UsageError is a request that cannot be traced as asked.
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Validate checks the request and turns it into trace options. Errors
// read as one line naming the flag.
func Validate(r Request) (Options, error) {
	o, err := options(r)
	if err != nil {
		return o, &UsageError{Err: err}
	}
	return o, nil
}

func options(r Request) (Options, error) {
	var o Options
	var err error
	dst, dport := r.Dst, r.Dport
	if r.To != "" {
		host, port, err := net.SplitHostPort(r.To)
		if err != nil {
			return o, fmt.Errorf("--to %q: want HOST:PORT (IPv6 as [ADDR]:PORT)", r.To)
		}
		if dst != "" || dport != 0 {
			return o, fmt.Errorf("--to cannot be combined with --dst or --dport")
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil || p == 0 {
			return o, fmt.Errorf("--to %q: port must be 1-65535", r.To)
		}
		dst, dport = host, uint16(p)
	}
	if r.Src != "" {
		if o.Filter.Src, err = parsePrefix(r.Src); err != nil {
			return o, fmt.Errorf("--src %q: want an IPv4 or IPv6 address or prefix", r.Src)
		}
	}
	if dst != "" {
		if o.Filter.Dst, err = parsePrefix(dst); err != nil {
			return o, fmt.Errorf("--dst %q: want an IPv4 or IPv6 address or prefix", dst)
		}
	}
	src, dstP := o.Filter.Src, o.Filter.Dst
	if src.IsValid() && dstP.IsValid() && src.Addr().Is4() != dstP.Addr().Is4() {
		return o, fmt.Errorf("--src %s and --dst %s: one is IPv4, the other IPv6", src, dstP)
	}
	if o.Filter.Proto, err = ParseProto(r.Proto); err != nil {
		return o, err
	}
	v6 := (src.IsValid() && src.Addr().Is6()) || (dstP.IsValid() && dstP.Addr().Is6())
	v4 := (src.IsValid() && src.Addr().Is4()) || (dstP.IsValid() && dstP.Addr().Is4())
	switch {
	case o.Filter.Proto == journey.ProtoICMP && v6:
		o.Filter.Proto = journey.ProtoICMPv6 // ping an IPv6 address: ICMPv6 echo
	case o.Filter.Proto == journey.ProtoICMPv6 && v4:
		return o, fmt.Errorf("--proto %s with an IPv4 address: want icmp", r.Proto)
	}
	if r.SYN {
		if o.Filter.Proto != 0 && o.Filter.Proto != journey.ProtoTCP {
			return o, fmt.Errorf("--syn needs --proto tcp")
		}
		o.Filter.Proto = journey.ProtoTCP
		o.Filter.SYNOnly = true
	}
	if (r.Sport != 0 || dport != 0) && isICMP(o.Filter.Proto) {
		return o, fmt.Errorf("ports make no sense with --proto icmp")
	}
	o.Filter.Sport, o.Filter.Dport = r.Sport, dport
	if r.Timeout <= 0 {
		return o, fmt.Errorf("--timeout must be positive")
	}
	if r.Count < 0 {
		return o, fmt.Errorf("--count must be >= 0")
	}
	if r.ProbeSize < 0 || r.ProbeSize > 65000 {
		return o, fmt.Errorf("--probe-size must be 0-65000")
	}
	if r.Snaplen < 0 || r.Snaplen > tracer.MaxSnaplen {
		return o, fmt.Errorf("--snaplen %d: want 1 to %d bytes", r.Snaplen, tracer.MaxSnaplen)
	}
	o.FromNetns, o.Timeout, o.Count, o.ProbeSize = r.FromNetns, r.Timeout, r.Count, r.ProbeSize
	o.Filter.Snaplen = r.Snaplen
	switch r.Netfilter {
	case "":
		o.NetfilterAll = r.Probe // the probe's first packet must meet every observer
	case NetfilterReached:
	case NetfilterAll:
		o.NetfilterAll = true
	default:
		return o, fmt.Errorf("--netfilter %q: want %s or %s", r.Netfilter, NetfilterReached, NetfilterAll)
	}
	if r.Probe {
		o.Probe = true
		o.ProbeProto = journey.ProtoName(o.Filter.Proto)
		if o.Filter.Proto == 0 {
			o.ProbeProto = "tcp"
			o.Filter.Proto = journey.ProtoTCP
		}
		if !o.Filter.Dst.IsValid() || !o.Filter.Dst.IsSingleIP() {
			return o, fmt.Errorf("--probe needs a destination address (--to HOST:PORT or --dst IP)")
		}
		if !isICMP(o.Filter.Proto) && o.Filter.Dport == 0 {
			return o, fmt.Errorf("--probe needs a destination port (--to HOST:PORT or --dport)")
		}
		o.ProbeDst = netip.AddrPortFrom(o.Filter.Dst.Addr(), o.Filter.Dport)
		if o.ProbeProto == "tcp" {
			// the probe's own SYN, not the handshake that may follow
			o.Filter.SYNOnly = true
		}
	}
	return o, nil
}

// Where the netfilter observers of a trace go (Request.Netfilter).
const (
	NetfilterReached = "reached"
	NetfilterAll     = "all"
)

// DiagnoseConfig is the diagnosis configuration a request asks for: the
// service range, the addresses peers know this node by, and which node owns
// which address (cluster mode).
func DiagnoseConfig(r Request) (diagnose.Config, error) {
	var c diagnose.Config
	cidr := r.ServiceCIDR
	if cidr == "" {
		cidr = "10.96.0.0/12"
	}
	for i, one := range strings.Split(cidr, ",") {
		svc, err := netip.ParsePrefix(strings.TrimSpace(one))
		if err != nil {
			return c, fmt.Errorf("--service-cidr %q: want a prefix like 10.96.0.0/12, or one per IP version separated by a comma (10.96.0.0/12,fd00:10:96::/112)", cidr)
		}
		if i == 0 {
			c.ServiceCIDR = svc.Masked()
		} else {
			c.ServiceCIDRs = append(c.ServiceCIDRs, svc.Masked())
		}
	}
	for _, s := range r.NodeIPs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return c, fmt.Errorf("--node-ip %q: want an IP address", s)
		}
		c.NodeIPs = append(c.NodeIPs, a)
	}
	if err := flannelConfig(r, &c.Flannel); err != nil {
		return c, err
	}
	for s, node := range r.NodeAddrs {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return c, fmt.Errorf("node_addrs: %q is not an IP address", s)
		}
		if c.NodeAddrs == nil {
			c.NodeAddrs = map[netip.Addr]string{}
		}
		c.NodeAddrs[a] = node
	}
	return c, nil
}

// flannelConfig checks the flannel state flags and fills fc.
func flannelConfig(r Request, fc *diagnose.FlannelConfig) error {
	for _, s := range r.FlannelSubnetFiles {
		ns, path, ok := strings.Cut(s, "=")
		if !ok {
			ns, path = "host", s
		}
		if ns == "" || path == "" || !strings.HasPrefix(path, "/") {
			return fmt.Errorf("--flannel-subnet-file %q: want an absolute PATH or NETNS=PATH", s)
		}
		if fc.SubnetFiles == nil {
			fc.SubnetFiles = map[string]string{}
		}
		fc.SubnetFiles[ns] = path
	}
	for _, ep := range r.FlannelEtcd {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("--flannel-etcd %q: want an endpoint URL like http://127.0.0.1:2379", ep)
		}
		fc.EtcdEndpoints = append(fc.EtcdEndpoints, ep)
	}
	if p := r.FlannelEtcdPrefix; p != "" && !strings.HasPrefix(p, "/") {
		return fmt.Errorf("--flannel-etcd-prefix %q: want a key prefix like /coreos.com/network", p)
	}
	if r.FlannelEtcdNetns != "" && len(r.FlannelEtcd) == 0 {
		return fmt.Errorf("--flannel-etcd-netns needs --flannel-etcd")
	}
	fc.EtcdPrefix, fc.EtcdNetns = r.FlannelEtcdPrefix, r.FlannelEtcdNetns
	return nil
}
