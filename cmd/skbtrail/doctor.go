package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/skbtrail/skbtrail/tracer"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

// doctorReport is `skbtrail doctor --json`.
type doctorReport struct {
	Schema   string           `json:"schema"`
	Kernel   string           `json:"kernel"`
	Features []tracer.Feature `json:"features"`
	Symbols  map[string]bool  `json:"kprobe_symbols"`
	Backends []tracer.Backend `json:"backends"`
	Degraded []string         `json:"degraded"`
	Notes    []string         `json:"notes,omitempty"`
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
}

func newDoctorReport(f tracer.Features) doctorReport {
	r := doctorReport{
		Schema:   "skbtrail.doctor/v1",
		Kernel:   kernelRelease(),
		Features: f.List(),
		Symbols:  f.Symbols,
		Backends: tracer.ChooseBackends(f),
		Degraded: f.Degraded(),
	}
	if r.Degraded == nil {
		r.Degraded = []string{}
	}
	if os.Geteuid() != 0 {
		r.Notes = append(r.Notes, "not running as root: the probes need CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN and CAP_SYS_ADMIN, so most say no for that reason alone")
	}
	return r
}

// runDoctor reports what this kernel offers skbtrail and which backend each
// hook point gets. It always exits 0: a missing feature is an answer.
func runDoctor(ctx context.Context, args []string, stdout io.Writer) error {
	fs := pflag.NewFlagSet("doctor", pflag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: skbtrail doctor [--json]\n\nreport the kernel features skbtrail uses (each tried, not guessed) and the backend chosen per hook point\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return exitcode.Usagef("doctor: %v", err)
	}
	if fs.NArg() > 0 {
		return exitcode.Usagef("doctor: unexpected argument %q", fs.Arg(0))
	}
	r := newDoctorReport(tracer.ProbeFeatures(ctx))
	if *asJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("doctor: write report: %w", err)
		}
		return nil
	}
	if err := r.writeText(stdout); err != nil {
		return fmt.Errorf("doctor: write report: %w", err)
	}
	return nil
}

func yesNo(f tracer.Feature) string {
	if f.Value != "" {
		return f.Value
	}
	if f.Available {
		return "yes"
	}
	return "no"
}

func (r doctorReport) writeText(out io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "kernel %s\n", r.Kernel)
	for _, n := range r.Notes {
		fmt.Fprintf(&b, "note: %s\n", n)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FEATURE\tAVAILABLE\tDETAIL")
	for _, f := range r.Features {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", f.Name, yesNo(f), f.Detail)
	}
	tw.Flush()

	var have, lack []string
	for _, s := range tracer.KprobeSymbols() {
		if r.Symbols[s] {
			have = append(have, s)
		} else {
			lack = append(lack, s)
		}
	}
	fmt.Fprintf(&b, "\nkprobe targets in /proc/kallsyms: %s", strings.Join(have, " "))
	if len(lack) > 0 {
		fmt.Fprintf(&b, " (absent: %s)", strings.Join(lack, " "))
	}
	b.WriteString("\n\n")

	tw = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOOK POINT\tBACKEND\tATTACH")
	for _, be := range r.Backends {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", be.Point, be.Mechanism, strings.Join(be.Attach, ", "))
	}
	tw.Flush()

	if len(r.Degraded) == 0 {
		b.WriteString("\nevery hook point has its preferred backend\n")
	} else {
		b.WriteString("\ndegraded:\n")
		for _, d := range r.Degraded {
			fmt.Fprintf(&b, "  - %s\n", d)
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}
