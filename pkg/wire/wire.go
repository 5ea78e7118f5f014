// Package wire holds what crosses a skbtrail daemon's API: trace requests,
// the NDJSON messages of a trace stream and a node's info. It needs no
// kernel and no tracer, so the kubectl plugin builds on any OS.
package wire

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
)

// Request is a trace as a user asks for it: skbtrail trace's flags, or the
// JSON body of the daemon API's POST /v1/trace (pkg/trace validates it).
type Request struct {
	Src       string `json:"src,omitempty"`
	Dst       string `json:"dst,omitempty"`
	Sport     uint16 `json:"sport,omitempty"`
	Dport     uint16 `json:"dport,omitempty"`
	Proto     string `json:"proto,omitempty"`
	To        string `json:"to,omitempty"`
	SYN       bool   `json:"syn,omitempty"`
	FromNetns string `json:"from_netns,omitempty"`
	// FromIP is the source pod's address: its namespace, among the ones
	// this node observes, is where the packets start (cluster mode, where
	// the caller knows the pod but not its namespace on the node).
	FromIP string `json:"from_ip,omitempty"`
	// Arriving: the packets come from another node; journeys start where
	// they enter this one, the daemon's own (host) network namespace
	// (cluster mode, for the nodes after the first).
	Arriving  bool `json:"arriving,omitempty"`
	Probe     bool `json:"probe,omitempty"`
	ProbeSize int  `json:"probe_size,omitempty"`
	// Netfilter says where the netfilter observers go: "reached" (each
	// namespace when a journey of the trace first reaches it), "all"
	// (every namespace, before the first packet) or "" (all with --probe,
	// reached without).
	Netfilter   string        `json:"netfilter,omitempty"`
	Timeout     time.Duration `json:"timeout"`
	Count       int           `json:"count"`
	ServiceCIDR string        `json:"service_cidr,omitempty"`
	NodeIPs     []string      `json:"node_ips,omitempty"`
	// NodeAddrs names the node that owns an underlay address (cluster
	// mode: from the API server's Node objects), for diagnosis.
	NodeAddrs map[string]string `json:"node_addrs,omitempty"`
	// CRIEndpoints name the container runtime sockets used to label pods
	// (nil: the usual containerd, CRI-O and cri-dockerd sockets).
	CRIEndpoints []string `json:"cri_endpoints,omitempty"`
	// Snaplen > 0 asks for the packet's first Snaplen bytes at every hop
	// (journey "frames", for --pcapng).
	Snaplen int `json:"snaplen,omitempty"`
	// FlannelSubnetFiles are flanneld --subnet-file paths, each
	// "PATH" (the initial namespace's) or "NETNS=PATH" (empty: the
	// default /run/flannel/subnet.env when it exists).
	FlannelSubnetFiles []string `json:"flannel_subnet_files,omitempty"`
	// FlannelEtcd are flannel's etcd endpoints, to read its leases (none:
	// not read); FlannelEtcdPrefix its --etcd-prefix; FlannelEtcdNetns the
	// namespace to reach them from (labs).
	FlannelEtcd       []string `json:"flannel_etcd,omitempty"`
	FlannelEtcdPrefix string   `json:"flannel_etcd_prefix,omitempty"`
	FlannelEtcdNetns  string   `json:"flannel_etcd_netns,omitempty"`
}

// Message is one line of the trace stream.
type Message struct {
	Ready   string           `json:"ready,omitempty"`
	Journey *journey.Journey `json:"journey,omitempty"`
	// Start is the wall-clock time (Unix ns) of the journey's first event,
	// so journeys of several nodes can be put on one time line.
	Start int64  `json:"start_unix_ns,omitempty"`
	Done  *Done  `json:"done,omitempty"`
	Error string `json:"error,omitempty"`
}

// Info is what a daemon's GET /v1/info answers (kubectl skbtrail nodes).
type Info struct {
	Node     string   `json:"node"`
	Version  string   `json:"version"`
	Kernel   string   `json:"kernel"`
	Arch     string   `json:"arch"`
	Backends []string `json:"backends"`
	Degraded []string `json:"degraded,omitempty"`
	// Netns lists the namespace patterns the daemon observes (labs; none:
	// every namespace of the node).
	Netns []string `json:"netns,omitempty"`
}

// Done ends a successful stream.
type Done struct {
	Journeys int    `json:"journeys"`
	Lost     uint64 `json:"lost"`
	// ProbeError says why the probe was not sent (trace.Result.ProbeError).
	ProbeError string `json:"probe_error,omitempty"`
}

// RemoteError is an error the daemon reported for the trace.
type RemoteError struct{ Msg string }

func (e *RemoteError) Error() string { return e.Msg }

// ReadStream reads a trace stream until its done or error message: ready
// gets the ready lines, emit each journey message.
func ReadStream(r io.Reader, ready func(string), emit func(Message) error) (Done, error) {
	var done Done
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<24)
	for sc.Scan() {
		var m Message
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			return done, fmt.Errorf("the daemon sent a bad message: %w", err)
		}
		switch {
		case m.Ready != "":
			if ready != nil {
				ready(m.Ready)
			}
		case m.Journey != nil:
			if err := emit(m); err != nil {
				return done, err
			}
		case m.Error != "":
			return done, &RemoteError{Msg: m.Error}
		case m.Done != nil:
			return *m.Done, nil
		}
	}
	if err := sc.Err(); err != nil {
		return done, fmt.Errorf("reading from the daemon: %w", err)
	}
	return done, fmt.Errorf("the daemon closed the trace without finishing it")
}
