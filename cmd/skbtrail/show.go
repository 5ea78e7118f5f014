package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/pflag"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/output"

	"github.com/skbtrail/skbtrail/pkg/exitcode"
)

// maxLine bounds one NDJSON line of a saved stream.
const maxLine = 16 << 20

// runShow renders saved NDJSON journeys (trace --json, the daemon's event
// stream) as the text report. Lines that are not journeys are named on
// stderr and make the exit status 2; the others are still shown.
func runShow(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("show", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	pcapPath := fs.String("pcapng", "", "write the packets of journeys saved with their bytes (trace --pcapng --json) to this pcapng `FILE` (- for standard output)")
	svgPath := fs.String("svg", "", "draw each journey as an SVG picture in this `FILE` (FILE-2.svg, ... for the next ones)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: skbtrail show [--svg FILE] [--pcapng FILE] FILE|-   (NDJSON journeys from trace --json or the daemon's --events)")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return nil
		}
		return exitcode.Usagef("show: %v", err)
	}
	if fs.NArg() != 1 {
		return exitcode.Usagef("show: want one FILE (or - for standard input)")
	}
	in := stdin
	if name := fs.Arg(0); name != "-" {
		f, err := os.Open(name)
		if err != nil {
			return exitcode.Usagef("show: %v", err)
		}
		defer f.Close()
		in = f
	}
	report := stdout
	if *pcapPath == "-" {
		report = stderr
	}
	arts, err := openArtifacts(*pcapPath, *svgPath, 0, stdout)
	if err != nil {
		return exitcode.Usagef("show: %v", err)
	}
	text := output.NewText(report)
	w := writerFunc(func(j *journey.Journey) error {
		if err := arts.write(j); err != nil {
			return err
		}
		return text.Write(j)
	})
	shown, bad, err := showJourneys(in, w, func(line int, err error) {
		fmt.Fprintf(stderr, "skbtrail: show: line %d: %v\n", line, err)
	})
	if summary, cerr := arts.close(); cerr != nil && err == nil {
		err = cerr
	} else if summary != "" {
		fmt.Fprintln(stderr, "skbtrail: "+summary)
	}
	if err != nil {
		return exitcode.Usagef("show: %v", err)
	}
	if bad > 0 {
		return exitcode.Usagef("show: %d of %d lines were not journeys", bad, shown+bad)
	}
	return nil
}

// showJourneys writes every journey line of r to w; onBad is told of each
// line that is not one. Blank lines are skipped.
func showJourneys(r io.Reader, w output.Writer, onBad func(line int, err error)) (shown, bad int, err error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for n := 1; sc.Scan(); n++ {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		j, perr := parseJourney(line)
		if perr != nil {
			bad++
			onBad(n, perr)
			continue
		}
		if err := w.Write(j); err != nil {
			return shown, bad, err
		}
		shown++
	}
	if err := sc.Err(); err != nil {
		return shown, bad, fmt.Errorf("reading: %w", err)
	}
	return shown, bad, nil
}

// parseJourney decodes one line: a journey object, or a daemon API message
// carrying one ({"journey": {...}}).
func parseJourney(line []byte) (*journey.Journey, error) {
	var probe struct {
		Schema  string           `json:"schema"`
		Journey *journey.Journey `json:"journey"`
	}
	if err := json.Unmarshal(line, &probe); err != nil {
		return nil, fmt.Errorf("not JSON: %v", err)
	}
	if probe.Journey != nil {
		if probe.Journey.Schema != journey.Schema {
			return nil, fmt.Errorf("schema %q, want %q", probe.Journey.Schema, journey.Schema)
		}
		probe.Journey.Normalize()
		return probe.Journey, nil
	}
	if probe.Schema != journey.Schema {
		return nil, fmt.Errorf("schema %q, want %q", probe.Schema, journey.Schema)
	}
	var j journey.Journey
	if err := json.Unmarshal(line, &j); err != nil {
		return nil, err
	}
	j.Normalize()
	return &j, nil
}

// writerFunc is a function as an output.Writer.
type writerFunc func(*journey.Journey) error

func (f writerFunc) Write(j *journey.Journey) error { return f(j) }
