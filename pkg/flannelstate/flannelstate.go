// Package flannelstate reads what flannel itself says about the node: its
// subnet file (/run/flannel/subnet.env: the network, this node's lease, MTU),
// its leases in etcd (/coreos.com/network/subnets/*: each node's subnet,
// announced PublicIP and VTEP MAC) and whether a flanneld process runs in a
// network namespace. Diagnosis reads it once per trace, never per packet, so
// a finding can say the fix in flannel's own terms. Everything here is
// optional: missing state is reported as missing, never guessed.
package flannelstate

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// DefaultSubnetFile is flanneld's default --subnet-file.
const DefaultSubnetFile = "/run/flannel/subnet.env"

// DefaultEtcdPrefix is flanneld's default --etcd-prefix.
const DefaultEtcdPrefix = "/coreos.com/network"

// SubnetFile is a flannel subnet file.
type SubnetFile struct {
	Path    string
	Network netip.Prefix // FLANNEL_NETWORK
	Subnet  netip.Prefix // FLANNEL_SUBNET (this node's lease, as the bridge address/len)
	// IPv6Network and IPv6Subnet are FLANNEL_IPV6_NETWORK and
	// FLANNEL_IPV6_SUBNET (dual-stack: EnableIPv6 in flannel's config).
	IPv6Network netip.Prefix
	IPv6Subnet  netip.Prefix
	MTU         int  // FLANNEL_MTU
	IPMasq      bool // FLANNEL_IPMASQ
}

// ReadSubnetFile reads and parses a subnet file.
func ReadSubnetFile(path string) (*SubnetFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("flannel subnet file: %w", err)
	}
	sf, err := ParseSubnetFile(data)
	if err != nil {
		return nil, fmt.Errorf("flannel subnet file %s: %w", path, err)
	}
	sf.Path = path
	return sf, nil
}

// ParseSubnetFile parses KEY=VALUE lines as flanneld writes them.
func ParseSubnetFile(data []byte) (*SubnetFile, error) {
	sf := &SubnetFile{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("line %d: want KEY=VALUE, got %q", n, line)
		}
		var err error
		switch k {
		case "FLANNEL_NETWORK":
			sf.Network, err = netip.ParsePrefix(v)
		case "FLANNEL_SUBNET":
			sf.Subnet, err = netip.ParsePrefix(v)
		case "FLANNEL_IPV6_NETWORK":
			sf.IPv6Network, err = netip.ParsePrefix(v)
		case "FLANNEL_IPV6_SUBNET":
			sf.IPv6Subnet, err = netip.ParsePrefix(v)
		case "FLANNEL_MTU":
			sf.MTU, err = strconv.Atoi(v)
		case "FLANNEL_IPMASQ":
			sf.IPMasq, err = strconv.ParseBool(v)
		}
		if err != nil {
			return nil, fmt.Errorf("line %d: %s: %w", n, k, err)
		}
	}
	if !sf.Network.IsValid() && !sf.Subnet.IsValid() && !sf.IPv6Network.IsValid() && !sf.IPv6Subnet.IsValid() {
		return nil, errors.New("no FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_IPV6_NETWORK or FLANNEL_IPV6_SUBNET")
	}
	return sf, nil
}

// Lease is one node's subnet lease as flannel keeps it in etcd. A
// dual-stack lease (EnableIPv6) also has the node's IPv6 subnet, the IPv6
// address it announces and the MAC of its IPv6 VXLAN device (flannel-v6.1).
type Lease struct {
	Key         string
	Subnet      netip.Prefix
	PublicIP    netip.Addr
	BackendType string
	VtepMAC     string // vxlan backend

	IPv6Subnet netip.Prefix
	PublicIPv6 netip.Addr
	VtepMACv6  string // vxlan backend, IPv6 device
}

type leaseValue struct {
	PublicIP      string
	PublicIPv6    *string
	BackendType   string
	BackendData   json.RawMessage
	BackendV6Data json.RawMessage
}

type vxlanData struct {
	VtepMAC string
}

// ParseLease parses one lease: the key's last element is the subnet
// ("10.244.1.0-24", dual-stack "10.244.1.0-24&fd00:10:244:1::-64"), the
// value flannel's JSON.
func ParseLease(key string, value []byte) (Lease, error) {
	l := Lease{Key: key}
	base := key[strings.LastIndex(key, "/")+1:]
	v4, v6, dual := strings.Cut(base, "&")
	var err error
	if l.Subnet, err = keyPrefix(v4); err != nil || !l.Subnet.Addr().Is4() {
		return l, fmt.Errorf("lease key %q: want .../subnets/A.B.C.D-LEN or .../subnets/A.B.C.D-LEN&IPV6-LEN", key)
	}
	if dual {
		if l.IPv6Subnet, err = keyPrefix(v6); err != nil || !l.IPv6Subnet.Addr().Is6() {
			return l, fmt.Errorf("lease key %q: IPv6 subnet %q: want IPV6-LEN", key, v6)
		}
	}
	var v leaseValue
	if err := json.Unmarshal(value, &v); err != nil {
		return l, fmt.Errorf("lease %s: %w", key, err)
	}
	if v.PublicIP != "" {
		if l.PublicIP, err = netip.ParseAddr(v.PublicIP); err != nil {
			return l, fmt.Errorf("lease %s: PublicIP: %w", key, err)
		}
	}
	if v.PublicIPv6 != nil && *v.PublicIPv6 != "" {
		if l.PublicIPv6, err = netip.ParseAddr(*v.PublicIPv6); err != nil {
			return l, fmt.Errorf("lease %s: PublicIPv6: %w", key, err)
		}
	}
	l.BackendType = v.BackendType
	l.VtepMAC = vtepMAC(v.BackendData)
	l.VtepMACv6 = vtepMAC(v.BackendV6Data)
	return l, nil
}

// keyPrefix parses a subnet as a lease key spells it: ADDR-LEN.
func keyPrefix(s string) (netip.Prefix, error) {
	i := strings.LastIndex(s, "-")
	if i < 0 {
		return netip.Prefix{}, errors.New("no -LEN")
	}
	return netip.ParsePrefix(s[:i] + "/" + s[i+1:])
}

// vtepMAC is the VtepMAC of a vxlan backend's data ("" without one).
func vtepMAC(data json.RawMessage) string {
	if len(data) == 0 || string(data) == "null" {
		return ""
	}
	var d vxlanData
	if json.Unmarshal(data, &d) != nil {
		return ""
	}
	return strings.ToLower(d.VtepMAC)
}

// DialFunc opens a connection (e.g. from inside a network namespace).
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// ReadLeases reads every lease under prefix/subnets/ from the first etcd
// endpoint that answers, through etcd's v3 JSON gateway. dial may be nil.
func ReadLeases(ctx context.Context, endpoints []string, prefix string, dial DialFunc) ([]Lease, error) {
	if prefix == "" {
		prefix = DefaultEtcdPrefix
	}
	tr := &http.Transport{DialContext: dial}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Timeout: 3 * time.Second, Transport: tr}
	from := strings.TrimSuffix(prefix, "/") + "/subnets/"
	to := from[:len(from)-1] + "0" // the key after every ".../subnets/..."
	body, _ := json.Marshal(map[string]string{
		"key":       base64.StdEncoding.EncodeToString([]byte(from)),
		"range_end": base64.StdEncoding.EncodeToString([]byte(to)),
	})
	var errs []error
	for _, ep := range endpoints {
		leases, err := rangeLeases(ctx, hc, strings.TrimSuffix(ep, "/")+"/v3/kv/range", body)
		if err == nil {
			return leases, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", ep, err))
	}
	if len(errs) == 0 {
		return nil, errors.New("flannel leases: no etcd endpoint")
	}
	return nil, fmt.Errorf("flannel leases: %w", errors.Join(errs...))
}

func rangeLeases(ctx context.Context, hc *http.Client, url string, body []byte) ([]Lease, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(data))
	}
	var r struct {
		Kvs []struct{ Key, Value string }
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("range answer: %w", err)
	}
	var out []Lease
	for _, kv := range r.Kvs {
		k, err1 := base64.StdEncoding.DecodeString(kv.Key)
		v, err2 := base64.StdEncoding.DecodeString(kv.Value)
		if err1 != nil || err2 != nil {
			return nil, errors.New("range answer: key or value is not base64")
		}
		l, err := ParseLease(string(k), v)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}

// FlanneldNetns returns the network namespace inodes in which a process
// named flanneld (or flannel, as `go install` names the binary) runs, from a
// scan of procRoot (normally /proc).
func FlanneldNetns(procRoot string) (map[uint64]bool, error) {
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return nil, fmt.Errorf("flanneld processes: %w", err)
	}
	out := map[uint64]bool{}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		comm, err := os.ReadFile(filepath.Join(procRoot, e.Name(), "comm"))
		if err != nil {
			continue // gone meanwhile
		}
		if c := strings.TrimSpace(string(comm)); c != "flanneld" && c != "flannel" {
			continue
		}
		link, err := os.Readlink(filepath.Join(procRoot, e.Name(), "ns", "net"))
		if err != nil {
			continue
		}
		// "net:[4026531840]"
		ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(link, "net:["), "]"), 10, 64)
		if err == nil {
			out[ino] = true
		}
	}
	return out, nil
}
