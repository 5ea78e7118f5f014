package tracer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/netnsutil"
	"github.com/skbtrail/skbtrail/pkg/journey"
)

// kpRequireRoot skips a privileged test when not root, unless
// SKBTRAIL_REQUIRE_PRIVILEGED=1 makes that a failure.
func kpRequireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("SKBTRAIL_REQUIRE_PRIVILEGED") == "1" {
		t.Fatalf("needs root, runs as euid %d (SKBTRAIL_REQUIRE_PRIVILEGED=1)", os.Geteuid())
	}
	t.Skipf("needs root, runs as euid %d (set SKBTRAIL_REQUIRE_PRIVILEGED=1 to fail instead)", os.Geteuid())
}

// Every kprobe program must pass the verifier of the running kernel, also
// where kprobes cannot attach: the program type loads everywhere.
func TestKprobeProgramsPassVerifier(t *testing.T) {
	kpRequireRoot(t)
	checks, err := VerifyKprobes()
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) == 0 {
		t.Fatal("no kprobe programs")
	}
	for _, c := range checks {
		if c.Err != nil {
			t.Errorf("%s (%s) rejected: %+v", c.Program, c.Section, c.Err)
			continue
		}
		t.Logf("%-32s %-42s verified, %d instructions processed", c.Program, c.Section, c.VerifiedInsns)
	}
}

// fentry is optional: a refusal (EPERM here) is reported, not failed.
func TestFentryLoadAttempt(t *testing.T) {
	kpRequireRoot(t)
	loadErr, attachErr := tryFentry()
	switch {
	case errors.Is(loadErr, unix.EPERM):
		t.Logf("fentry load refused with EPERM (reported, not a failure): %v", loadErr)
	case errors.Is(loadErr, ebpf.ErrNotSupported), errors.Is(loadErr, unix.EOPNOTSUPP), errors.Is(loadErr, unix.EINVAL):
		t.Logf("fentry not supported by this kernel: %v", loadErr)
	case loadErr != nil:
		t.Errorf("fentry load failed unexpectedly: %v", loadErr)
	case attachErr != nil:
		t.Logf("fentry loads, attach failed: %v", attachErr)
	default:
		t.Log("fentry loads and attaches")
	}
	if f := probeFentry(); !f.Available && f.Detail == "" {
		t.Error("fentry unavailable without a reason")
	}
}

// What skbtrail needs from this kernel is there, and every probe that says
// no says why.
func TestProbeFeaturesHere(t *testing.T) {
	kpRequireRoot(t)
	f := ProbeFeatures(context.Background())
	for _, feat := range f.List() {
		t.Logf("%-15s available=%-5v value=%-10q %s", feat.Name, feat.Available, feat.Value, feat.Detail)
		if feat.Name == "" {
			t.Errorf("feature without a name: %+v", feat)
		}
		if !feat.Available && feat.Detail == "" {
			t.Errorf("%s: unavailable without a reason", feat.Name)
		}
	}
	for _, need := range []Feature{f.BTF, f.TpBTF, f.RingBuf, f.NetfilterLink} {
		if !need.Available {
			t.Errorf("%s not available: %s", need.Name, need.Detail)
		}
	}
	if !f.Symbols[symNFHookSlow] || !f.Symbols[symConsumeSkb] {
		t.Errorf("kallsyms lookup found neither nf_hook_slow nor consume_skb: %v", f.Symbols)
	}
	if !f.Kprobe.Available && !strings.Contains(f.Kprobe.Detail, "attach") && !strings.Contains(f.Kprobe.Detail, "load") {
		t.Errorf("kprobe unavailable, detail does not say which step failed: %q", f.Kprobe.Detail)
	}
	for _, d := range f.Degraded() {
		t.Log("degraded: " + d)
	}
}

// The kprobe set loads into a tracer sharing its maps. Where kprobes
// attach, they alone report a packet's whole journey (kprobe-only kernel)
// with the netfilter verdicts; where they do not, AttachKprobes says why and
// leaves the tracer usable.
func TestKprobeBackend(t *testing.T) {
	kpRequireRoot(t)
	feats := ProbeFeatures(context.Background())

	tr, err := New(Settings{})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.LoadKprobes(HookPoints...); err != nil {
		tr.Close()
		t.Fatalf("kprobe programs do not load with the tracer's maps: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	tr, err = New(Settings{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	err = tr.AttachKprobes(HookPoints...)
	if !feats.Kprobe.Available {
		if err == nil {
			t.Fatalf("kprobes attached although the probe said: %s", feats.Kprobe.Detail)
		}
		if !strings.Contains(err.Error(), "attach kprobe/") {
			t.Errorf("error does not say what failed to attach: %v", err)
		}
		if p := tr.KprobePoints(); p != nil {
			t.Errorf("KprobePoints() = %v after a failed attach", p)
		}
		if err := tr.AttachTracepoints(); err != nil {
			t.Fatalf("tracer unusable after the failed kprobe attach: %v", err)
		}
		t.Logf("kprobes unavailable on this kernel, as probed: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("kprobes probed available but the backend does not attach: %v", err)
	}
	kprobeOnlyJourney(t, tr)
}

func kpRun(t *testing.T, stdin string, args ...string) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// kprobeOnlyJourney sends two UDP datagrams inside a throwaway netns whose
// OUTPUT drops port 9: to port 7 (accepted, looped back, freed NO_SOCKET)
// and to port 9 (dropped by netfilter), and checks what the kprobes report.
func kprobeOnlyJourney(t *testing.T, tr *Tracer) {
	name := fmt.Sprintf("skbtrail-kp-%d", os.Getpid())
	kpRun(t, "", "ip", "netns", "add", name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", name).Run() })
	kpRun(t, "", "ip", "-n", name, "link", "set", "lo", "up")
	kpRun(t, `table ip skbtrail_kp {
	chain out {
		type filter hook output priority 0; policy accept;
		udp dport 9 drop
	}
}
`, "ip", "netns", "exec", name, "nft", "-f", "-")
	path, ino, err := netnsutil.ResolveName(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tr.AddFilter(Filter{Proto: journey.ProtoUDP, Dst: netip.MustParsePrefix("127.0.0.1/32"), Netns: uint32(ino)}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	events := make(chan journey.Event, 4096)
	go tr.Run(ctx, events)

	err = netnsutil.Do(path, func() error {
		for _, port := range []string{"7", "9"} {
			c, err := net.Dial("udp4", "127.0.0.1:"+port)
			if err != nil {
				return err
			}
			_, _ = c.Write([]byte("skbtrail kprobe test")) // port 9: EPERM from the drop
			c.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	type want struct {
		desc string
		ok   func(e journey.Event) bool
	}
	is := func(kind journey.Kind, port uint16) func(journey.Event) bool {
		return func(e journey.Event) bool { return e.Kind == kind && e.Pkt.Dport == port }
	}
	wants := []want{
		{"nf-verdict OUTPUT accept of port 7", func(e journey.Event) bool {
			return is(journey.KindNFVerdict, 7)(e) && e.Hook == journey.HookLocalOut && e.Reason == journey.NFAccept
		}},
		{"tx lo of port 7", func(e journey.Event) bool { return is(journey.KindTx, 7)(e) && e.Ifname == "lo" }},
		{"rx lo of port 7", func(e journey.Event) bool { return is(journey.KindRx, 7)(e) && e.Ifname == "lo" }},
		{"drop of port 7 (no socket)", is(journey.KindDrop, 7)},
		{"nf-verdict OUTPUT drop of port 9", func(e journey.Event) bool {
			return is(journey.KindNFVerdict, 9)(e) && e.Hook == journey.HookLocalOut && e.Reason == journey.NFDrop
		}},
		{"drop of port 9", is(journey.KindDrop, 9)},
	}
	seen := make([]bool, len(wants))
	var got []journey.Event
	for missing := len(wants); missing > 0; {
		select {
		case e := <-events:
			got = append(got, e)
			if e.Source != journey.SourceKprobe {
				t.Errorf("event from source %d, want only kprobes: %+v", e.Source, e)
			}
			for i, w := range wants {
				if !seen[i] && w.ok(e) {
					seen[i] = true
					missing--
				}
			}
		case <-ctx.Done():
			for _, e := range got {
				t.Logf("event %v hook %d reason %d dev %s %+v", e.Kind, e.Hook, e.Reason, e.Ifname, e.Pkt)
			}
			for i, w := range wants {
				if !seen[i] {
					t.Errorf("no %s", w.desc)
				}
			}
			return
		}
	}
	// the drop verdict precedes the drop of the same skb
	for i, e := range got {
		if e.Kind == journey.KindDrop && e.Pkt.Dport == 9 {
			if i == 0 || got[i-1].Kind != journey.KindNFVerdict || got[i-1].Skb != e.Skb {
				t.Errorf("the drop of port 9 is not preceded by its netfilter verdict: %+v", got)
			}
		}
	}
}
