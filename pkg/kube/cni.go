//go:build linux

package kube

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/skbtrail/skbtrail/netnsutil"
)

// CNI_ARGS keys the kubelet's runtimes pass to CNI plugins.
const (
	cniArgPodNamespace = "K8S_POD_NAMESPACE"
	cniArgPodName      = "K8S_POD_NAME"
	cniArgPodUID       = "K8S_POD_UID"
)

// cniCacheFile is a libcni cached result (<cache>/results/<net>-<id>-<if>).
type cniCacheFile struct {
	Kind        string          `json:"kind"`
	ContainerID string          `json:"containerId"`
	Config      json.RawMessage `json:"config"` // base64 of the network config
	IfName      string          `json:"ifName"`
	NetworkName string          `json:"networkName"`
	NetNS       string          `json:"netns"` // libcni >= 1.1
	CniArgs     [][2]string     `json:"cniArgs"`
	Result      json.RawMessage `json:"result"`
}

// cniResult is the part of a CNI result (any version) we need.
type cniResult struct {
	Interfaces []struct {
		Name    string `json:"name"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Address   string `json:"address"`
		Interface *int   `json:"interface"`
	} `json:"ips"`
	IP4 *struct { // CNI 0.1/0.2
		IP string `json:"ip"`
	} `json:"ip4"`
	IP6 *struct {
		IP string `json:"ip"`
	} `json:"ip6"`
}

// cniEntry is one parsed cache file.
type cniEntry struct {
	file                   string
	containerID            string
	ifName, network        string
	netns                  string
	podNS, podName, podUID string
	ips                    []netip.Addr
	mod                    time.Time
}

// parseCNICache parses one libcni cache file.
func parseCNICache(path string, data []byte) (cniEntry, error) {
	var f cniCacheFile
	if err := json.Unmarshal(data, &f); err != nil {
		return cniEntry{}, fmt.Errorf("%s: %v", path, err)
	}
	if f.ContainerID == "" {
		return cniEntry{}, fmt.Errorf("%s: no containerId", path)
	}
	e := cniEntry{file: path, containerID: f.ContainerID, ifName: f.IfName, network: f.NetworkName, netns: f.NetNS}
	for _, kv := range f.CniArgs {
		e.setArg(kv[0], kv[1])
	}
	if e.podName == "" {
		e.argsFromConfig(f.Config)
	}
	if len(f.Result) > 0 {
		var res cniResult
		if err := json.Unmarshal(f.Result, &res); err != nil {
			return cniEntry{}, fmt.Errorf("%s: result: %v", path, err)
		}
		for _, ip := range res.IPs {
			if ip.Interface != nil && *ip.Interface >= 0 && *ip.Interface < len(res.Interfaces) {
				if itf := res.Interfaces[*ip.Interface]; itf.Sandbox == "" && itf.Name != f.IfName {
					continue // an address on the host side
				}
			}
			e.addIP(ip.Address)
		}
		if res.IP4 != nil {
			e.addIP(res.IP4.IP)
		}
		if res.IP6 != nil {
			e.addIP(res.IP6.IP)
		}
		if e.netns == "" {
			for _, itf := range res.Interfaces {
				if itf.Sandbox != "" && (e.netns == "" || itf.Name == f.IfName) {
					e.netns = itf.Sandbox
				}
			}
		}
	}
	return e, nil
}

func (e *cniEntry) setArg(k, v string) {
	switch k {
	case cniArgPodNamespace:
		e.podNS = v
	case cniArgPodName:
		e.podName = v
	case cniArgPodUID:
		e.podUID = v
	}
}

// argsFromConfig looks for K8S_POD_* in the cached network config's "args"
// (runtimes that pass them there rather than in CNI_ARGS), at the top level
// of "args" or one level down (e.g. "args": {"cni": {...}}).
func (e *cniEntry) argsFromConfig(raw json.RawMessage) {
	if len(raw) == 0 {
		return
	}
	conf := []byte(raw)
	var s string
	if json.Unmarshal(raw, &s) == nil {
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return
		}
		conf = b
	}
	var c struct {
		Args map[string]any `json:"args"`
	}
	if json.Unmarshal(conf, &c) != nil {
		return
	}
	scan := func(m map[string]any) {
		for k, v := range m {
			if s, ok := v.(string); ok {
				e.setArg(k, s)
			}
		}
	}
	scan(c.Args)
	for _, v := range c.Args {
		if m, ok := v.(map[string]any); ok {
			scan(m)
		}
	}
}

func (e *cniEntry) addIP(s string) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		p, perr := netip.ParsePrefix(s)
		if perr != nil {
			return
		}
		a = p.Addr()
	}
	a = a.Unmap()
	if a.IsLoopback() {
		return
	}
	for _, x := range e.ips {
		if x == a {
			return
		}
	}
	e.ips = append(e.ips, a)
}

// cniGroup is every cache entry of one container (pod sandbox).
type cniGroup struct {
	containerID string
	entries     []cniEntry // primary interface (eth0) first
	file        string     // file of the primary entry
}

func (g cniGroup) ref() (ns, name, uid string) {
	for _, e := range g.entries {
		if e.podName != "" {
			return e.podNS, e.podName, e.podUID
		}
	}
	return "", "", ""
}

func (g cniGroup) ips() []netip.Addr {
	var out []netip.Addr
	for _, e := range g.entries {
		out = append(out, e.ips...)
	}
	return out
}

func (g cniGroup) netnsPath() string {
	for _, e := range g.entries {
		if e.netns != "" {
			return e.netns
		}
	}
	return ""
}

func (g cniGroup) mod() time.Time {
	var t time.Time
	for _, e := range g.entries {
		if e.mod.After(t) {
			t = e.mod
		}
	}
	return t
}

// pod returns the group as a Pod; ok is false if its network namespace is
// unknown or cannot be opened.
func (g cniGroup) pod() (Pod, bool) {
	path := g.netnsPath()
	if path == "" {
		return Pod{}, false
	}
	ino, err := netnsutil.InodeOf(path)
	if err != nil {
		return Pod{}, false
	}
	ns, name, uid := g.ref()
	p := Pod{Namespace: ns, Name: name, UID: uid, SandboxID: g.containerID,
		NetnsPath: path, NetnsInode: uint32(ino), Source: SourceCNICache}
	if ips := g.ips(); len(ips) > 0 {
		p.IP, p.OtherIP = ips[0], otherIP(ips)
	}
	return p, true
}

// readCNI reads every cache file. The error is non-nil only when none of
// the cache directories could be read.
func (r *Resolver) readCNI() ([]cniGroup, error) {
	byID := map[string]*cniGroup{}
	var problems []string
	readable := 0
	for _, dir := range r.CNIResultsDirs {
		ents, err := os.ReadDir(dir)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				problems = append(problems, dir+": no such directory")
			} else {
				problems = append(problems, err.Error())
			}
			continue
		}
		readable++
		for _, de := range ents {
			if !de.Type().IsRegular() {
				continue
			}
			path := filepath.Join(dir, de.Name())
			data, err := os.ReadFile(path)
			if err != nil {
				r.logf("kube: CNI cache: %v", err)
				continue
			}
			e, err := parseCNICache(path, data)
			if err != nil {
				r.logf("kube: CNI cache: %v", err)
				continue
			}
			if e.ifName == "lo" || (len(e.ips) == 0 && e.network == "cni-loopback") {
				continue // the runtime's loopback network
			}
			if fi, err := de.Info(); err == nil {
				e.mod = fi.ModTime()
			}
			g := byID[e.containerID]
			if g == nil {
				g = &cniGroup{containerID: e.containerID}
				byID[e.containerID] = g
			}
			g.entries = append(g.entries, e)
		}
	}
	groups := make([]cniGroup, 0, len(byID))
	for _, g := range byID {
		sort.SliceStable(g.entries, func(i, j int) bool {
			a, b := g.entries[i], g.entries[j]
			if (a.ifName == "eth0") != (b.ifName == "eth0") {
				return a.ifName == "eth0"
			}
			return a.file < b.file
		})
		g.file = g.entries[0].file
		groups = append(groups, *g)
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].file < groups[j].file })
	if readable == 0 && len(r.CNIResultsDirs) > 0 {
		return groups, fmt.Errorf("no CNI result cache (%s)", strings.Join(problems, "; "))
	}
	if len(r.CNIResultsDirs) == 0 {
		return nil, errors.New("no CNI result cache configured")
	}
	return groups, nil
}

// cniGroupByID returns the cache entries of container id.
func (r *Resolver) cniGroupByID(id string) (cniGroup, bool) {
	groups, _ := r.readCNI()
	for _, g := range groups {
		if g.containerID == id {
			return g, true
		}
	}
	return cniGroup{}, false
}

// cniByName finds s in the CNI cache. When it is not there, the error
// matches ErrNotFound and detail says so in words that fit after "and".
func (r *Resolver) cniByName(s Spec) (p Pod, detail string, err error) {
	groups, err := r.readCNI()
	if err != nil {
		return Pod{}, err.Error(), newError(ErrNotFound, "pod %s not found: %v", s, err)
	}
	var matches []cniGroup
	var names []string
	for _, g := range groups {
		ns, name, _ := g.ref()
		if name == "" {
			continue
		}
		if ns == s.Namespace && name == s.Name {
			matches = append(matches, g)
		} else {
			names = append(names, ns+"/"+name)
		}
	}
	var live []Pod
	for _, g := range matches {
		if p, ok := g.pod(); ok {
			live = append(live, p)
		}
	}
	switch {
	case len(live) == 1:
		return live[0], "", nil
	case len(live) > 1:
		ids := make([]string, len(live))
		for i, p := range live {
			ids[i] = shortID(p.SandboxID)
		}
		return Pod{}, "", newError(ErrAmbiguous, "pod %s has %d live sandboxes in the CNI cache (%s); pass the pod IP instead",
			s, len(live), strings.Join(ids, ", "))
	case len(matches) > 0:
		sort.Slice(matches, func(i, j int) bool { return matches[i].mod().After(matches[j].mod()) })
		g := matches[0]
		if path := g.netnsPath(); path != "" {
			return Pod{}, "", newError(ErrNotRunning, "pod %s is not running on this node: the network namespace %s of its sandbox %s (CNI cache %s) is gone",
				s, path, shortID(g.containerID), g.file)
		}
		return Pod{}, "", newError(ErrNoNetns, "pod %s: the CNI cache (%s) does not record its network namespace", s, g.file)
	}
	detail = "not in the CNI cache (" + strings.Join(r.CNIResultsDirs, ", ") + ")" + didYouMean(suggest(s.String(), names, 3))
	return Pod{}, detail, newError(ErrNotFound, "pod %s %s", s, detail)
}

// cniByIP finds the live cache entry owning ip, falling back to host-local
// IPAM allocations. When only IPAM knows the address, sandboxID is its
// container id (found is false).
func (r *Resolver) cniByIP(ip netip.Addr) (p Pod, found bool, sandboxID string, err error) {
	groups, _ := r.readCNI()
	var live []Pod
	for _, g := range groups {
		for _, a := range g.ips() {
			if a == ip {
				if p, ok := g.pod(); ok {
					p.IP = ip
					live = append(live, p)
				}
				break
			}
		}
	}
	if len(live) == 0 {
		sandboxID = r.ipamOwner(ip)
		if sandboxID != "" {
			for _, g := range groups {
				if g.containerID == sandboxID {
					if p, ok := g.pod(); ok {
						p.IP = ip
						live = append(live, p)
					}
				}
			}
		}
	}
	switch len(live) {
	case 0:
		return Pod{}, false, sandboxID, nil
	case 1:
		return live[0], true, "", nil
	}
	parts := make([]string, len(live))
	for i, p := range live {
		parts[i] = fmt.Sprintf("%s/%s (sandbox %s)", p.Namespace, p.Name, shortID(p.SandboxID))
	}
	return Pod{}, true, "", newError(ErrAmbiguous, "address %s belongs to several pods in the CNI cache: %s", ip, strings.Join(parts, ", "))
}

// ipamOwner returns the container id that host-local IPAM allocated ip to
// (<dir>/<network>/<ip> holds "<id>\n<ifname>"), or "".
func (r *Resolver) ipamOwner(ip netip.Addr) string {
	for _, dir := range r.IPAMDirs {
		nets, err := os.ReadDir(dir)
		if err != nil {
			continue
		}
		for _, n := range nets {
			if !n.IsDir() {
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, n.Name(), ip.String()))
			if err != nil {
				continue
			}
			sc := bufio.NewScanner(bytes.NewReader(data))
			if sc.Scan() {
				if id := strings.TrimSpace(sc.Text()); id != "" {
					r.logf("kube: host-local IPAM %s/%s: %s allocated to container %s", dir, n.Name(), ip, shortID(id))
					return id
				}
			}
		}
	}
	return ""
}
