package e2e

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/tests/lab"
)

// tsharkPacket is one packet as tshark decodes it.
type tsharkPacket struct {
	iface    string
	comments string
	ipSrc    []string // outer first
	ipDst    []string
	vni      string
	syn      string
	proto    []string
	icmp     string // type/code of the outermost ICMP header
}

// tshark reads a pcapng file with tshark, decoding UDP 8472 (flannel) as
// VXLAN, and returns its packets.
func tshark(t *testing.T, file string) []tsharkPacket {
	t.Helper()
	bin, err := exec.LookPath("tshark")
	if err != nil {
		t.Fatalf("tshark is needed to check --pcapng (apt-get install tshark; make deps installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-r", file, "-d", "udp.port==8472,vxlan", "-T", "fields",
		"-E", "separator=|", "-E", "aggregator=;",
		"-e", "frame.interface_name", "-e", "frame.comment", "-e", "ip.src", "-e", "ip.dst",
		"-e", "vxlan.vni", "-e", "tcp.flags.syn", "-e", "ip.proto", "-e", "icmp.type", "-e", "icmp.code")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("tshark -r %s: %v\n%s", file, err, stderr.String())
	}
	var pkts []tsharkPacket
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Split(line, "|")
		if len(f) != 9 {
			t.Fatalf("tshark line %q: want 9 fields", line)
		}
		p := tsharkPacket{iface: f[0], comments: f[1], ipSrc: strings.Split(f[2], ";"),
			ipDst: strings.Split(f[3], ";"), vni: f[4], syn: f[5], proto: strings.Split(f[6], ";")}
		if f[7] != "" {
			p.icmp = strings.Split(f[7], ";")[0] + "/" + strings.Split(f[8], ";")[0]
		}
		pkts = append(pkts, p)
	}
	return pkts
}

// lastRequest is the last packet of the request direction.
func lastRequest(pkts []tsharkPacket) tsharkPacket {
	for i := len(pkts) - 1; i > 0; i-- {
		if strings.Contains(pkts[i].comments, "skbtrail request hop:") {
			return pkts[i]
		}
	}
	return pkts[0]
}

// checkSVG parses an SVG file as XML and returns its text.
func checkSVG(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(bytes.NewReader(data))
	var text strings.Builder
	root := ""
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s is not well-formed XML: %v", file, err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			if root == "" {
				root = tk.Name.Local
			}
		case xml.CharData:
			text.Write(tk)
		}
	}
	if root != "svg" {
		t.Fatalf("%s: root element %q, want svg", file, root)
	}
	return text.String()
}

// Issue 17: every traced packet at every hop as pcapng, checked with tshark;
// the journey as SVG; and the same pcapng again from the saved JSON.
func TestPcapng(t *testing.T) {
	cases := []struct {
		name, fault string
		args        func(l *lab.Lab) []string
		check       func(t *testing.T, l *lab.Lab, j journey.Journey, pkts []tsharkPacket)
		dropWords   []string
	}{
		{"forward-drop", "forward-drop", func(l *lab.Lab) []string {
			return []string{"--to", l.WebService.Addr()}
		}, func(t *testing.T, l *lab.Lab, j journey.Journey, pkts []tsharkPacket) {
			// the VXLAN hop on node-a's underlay: outer node-a -> node-b,
			// VNI 1, carrying the inner SYN to pod-b (after DNAT)
			found := false
			for _, p := range pkts {
				if p.iface == l.NodeA+"/eth0" && p.vni == "1" && len(p.ipSrc) == 2 &&
					p.ipSrc[0] == l.NodeAIP && p.ipDst[0] == l.NodeBIP && p.ipDst[1] == l.PodBIP && p.syn == "1" {
					found = true
				}
			}
			if !found {
				t.Errorf("no VXLAN packet %s -> %s with an inner SYN to %s on %s/eth0", l.NodeAIP, l.NodeBIP, l.PodBIP, l.NodeA)
			}
			// the first packet is the SYN to the ClusterIP at pod-a
			if p := pkts[0]; p.iface != l.PodA+"/eth0" || p.ipDst[0] != l.WebService.ClusterIP || p.syn != "1" {
				t.Errorf("first packet %+v, want the SYN to %s on %s/eth0", p, l.WebService.ClusterIP, l.PodA)
			}
		}, []string{"NETFILTER_DROP", "NF_POLICY_DROP", "FORWARD"}},
		{"mtu", "small-mtu", func(l *lab.Lab) []string {
			return []string{"--proto", "udp", "--to", l.PodBIP + ":53", "--probe-size", "1400"}
		}, func(t *testing.T, l *lab.Lab, j journey.Journey, pkts []tsharkPacket) {
			last := lastRequest(pkts)
			if last.iface != l.Router+"/ra" || last.vni != "1" || last.ipDst[len(last.ipDst)-1] != l.PodBIP {
				t.Errorf("last request packet %+v, want the encapsulated datagram to %s at %s/ra", last, l.PodBIP, l.Router)
			}
			// the router's "fragmentation needed" back to node-a, quoting the VXLAN packet
			found := false
			for _, p := range pkts {
				if p.icmp == "3/4" && p.ipDst[0] == l.NodeAIP && strings.Contains(p.comments, "icmp-error") &&
					p.ipDst[len(p.ipDst)-1] == l.PodBIP {
					found = true
				}
			}
			if !found {
				t.Errorf("no ICMP fragmentation-needed to %s quoting the datagram to %s in the capture", l.NodeAIP, l.PodBIP)
			}
		}, []string{"PKT_TOO_BIG", "MTU_EXCEEDED"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l := lab.NewForTest(t, lab.Config{})
			if err := l.ApplyFault(c.fault); err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			pcap, svg := filepath.Join(dir, "trace.pcapng"), filepath.Join(dir, "trace.svg")
			args := append([]string{"--from-netns", l.PodA, "--probe", "--timeout", "5s", "--pcapng", pcap, "--svg", svg}, c.args(l)...)
			res := runTrace(t, args...)
			if len(res.journeys) != 1 || res.exit != 1 {
				t.Fatalf("want 1 failed journey, got %d (exit %d)", len(res.journeys), res.exit)
			}
			j := res.journeys[0]
			if len(j.Frames) == 0 {
				t.Fatal("the journey has no frames")
			}
			pkts := tshark(t, pcap)
			if len(pkts) != len(j.Frames) {
				t.Errorf("tshark read %d packets, the journey has %d frames", len(pkts), len(j.Frames))
			}
			// one interface per (netns, device) of the path
			ifaces := map[string]bool{}
			for _, p := range pkts {
				ifaces[p.iface] = true
			}
			for _, h := range j.Hops {
				if h.Device != "" && !ifaces[h.Netns+"/"+h.Device] {
					t.Errorf("no pcapng interface %s/%s for hop %+v (have %v)", h.Netns, h.Device, h, ifaces)
				}
			}
			// the last packet of the request is where it died, and its comments say so
			last := lastRequest(pkts)
			if want := j.Verdict.Netns + "/" + j.Verdict.Device; last.iface != want {
				t.Errorf("last packet on %s, want %s", last.iface, want)
			}
			for _, w := range c.dropWords {
				if !strings.Contains(last.comments, w) {
					t.Errorf("last packet's comments %q do not name %s", last.comments, w)
				}
			}
			for i, p := range pkts {
				if !strings.Contains(p.comments, " hop: ") {
					t.Errorf("packet %d has no hop comment: %q", i+1, p.comments)
				}
			}
			c.check(t, l, j, pkts)

			// the SVG: well-formed, names the namespaces and the drop
			text := checkSVG(t, svg)
			for _, w := range []string{l.PodA, l.NodeA, j.Verdict.Netns, j.Verdict.Reason, "dropped"} {
				if !strings.Contains(text, w) {
					t.Errorf("SVG text does not contain %q", w)
				}
			}

			// show: the saved JSON gives the same packets and picture
			saved := filepath.Join(dir, "journey.json")
			if err := os.WriteFile(saved, []byte(res.stdout), 0o644); err != nil {
				t.Fatal(err)
			}
			pcap2 := filepath.Join(dir, "show.pcapng")
			out, err := exec.Command(skbtrailBin, "show", "--pcapng", pcap2, saved).CombinedOutput()
			if err != nil {
				t.Fatalf("skbtrail show --pcapng: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), "picture:") || !strings.Contains(string(out), j.Verdict.Reason) {
				t.Errorf("show output lacks the picture or the verdict:\n%s", out)
			}
			again := tshark(t, pcap2)
			if len(again) != len(pkts) {
				t.Fatalf("show --pcapng wrote %d packets, trace wrote %d", len(again), len(pkts))
			}
			for i := range again {
				if again[i].iface != pkts[i].iface || again[i].comments != pkts[i].comments || strings.Join(again[i].ipDst, ";") != strings.Join(pkts[i].ipDst, ";") {
					t.Errorf("packet %d differs: show %+v, trace %+v", i+1, again[i], pkts[i])
				}
			}
		})
	}

	t.Run("stdout", func(t *testing.T) {
		// --pcapng -: the packets own standard output, the report goes to stderr
		l := lab.NewForTest(t, lab.Config{})
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, skbtrailBin, "trace", "--from-netns", l.PodA, "--probe", "--timeout", "5s",
			"--to", l.WebService.Addr(), "--pcapng", "-", "--snaplen", "96")
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("trace --pcapng -: %v\n%s", err, stderr.String())
		}
		file := filepath.Join(t.TempDir(), "out.pcapng")
		if err := os.WriteFile(file, stdout.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		pkts := tshark(t, file)
		if len(pkts) < 5 || !strings.Contains(stderr.String(), "DELIVERED") {
			t.Fatalf("%d packets on stdout; stderr:\n%s", len(pkts), stderr.String())
		}
		replies := 0
		for _, p := range pkts {
			if strings.Contains(p.comments, "skbtrail reply hop:") {
				replies++
			}
		}
		if replies == 0 {
			t.Errorf("no reply packet (SYN-ACK) in the capture")
		}
	})

	t.Run("through-daemon", func(t *testing.T) {
		// a trace served by the daemon asks it for the bytes (Request.snaplen)
		l := lab.NewForTest(t, lab.Config{})
		if err := l.ApplyFault("forward-drop"); err != nil {
			t.Fatal(err)
		}
		d := startDaemon(t)
		pcap := filepath.Join(t.TempDir(), "daemon.pcapng")
		res := runTrace(t, "--daemon-socket", d.socket, "--from-netns", l.PodA, "--to", l.WebService.Addr(), "--probe", "--timeout", "5s", "--pcapng", pcap)
		if len(res.journeys) != 1 || len(res.journeys[0].Frames) == 0 {
			t.Fatalf("%d journeys, frames %d", len(res.journeys), len(res.journeys[0].Frames))
		}
		pkts := tshark(t, pcap)
		if len(pkts) != len(res.journeys[0].Frames) || !strings.Contains(lastRequest(pkts).comments, "NF_POLICY_DROP") {
			t.Fatalf("%d packets for %d frames; last request comments %q", len(pkts), len(res.journeys[0].Frames), lastRequest(pkts).comments)
		}
	})

	t.Run("bad-snaplen", func(t *testing.T) {
		out, err := exec.Command(skbtrailBin, "trace", "--to", "192.0.2.1:80", "--pcapng", "-", "--snaplen", "5000").CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "--snaplen 5000") || strings.Count(strings.TrimSpace(string(out)), "\n") != 0 {
			t.Errorf("--snaplen 5000: %v, want exit 2 with one line naming it:\n%s", err, out)
		}
	})
}
