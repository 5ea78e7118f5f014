package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/skbtrail/skbtrail/pkg/journey"
	"github.com/skbtrail/skbtrail/pkg/pcapng"
	"github.com/skbtrail/skbtrail/pkg/picture"
)

// DefaultSnaplen is enough for the headers of a VXLAN-encapsulated TCP SYN
// with the usual options (14+20+8+8 outer, 14+20+40 inner).
const DefaultSnaplen = 128

// artifacts are the files a trace (or show) writes besides its report:
// the pcapng of every traced hop and the SVG picture of each journey.
type artifacts struct {
	pcap     *pcapng.Writer
	pcapFile *os.File // nil when writing to standard output
	svgPath  string
	svgs     int
	bare     int // journeys without packet bytes while --pcapng asked for them
}

// openArtifacts opens what the flags ask for; pcapPath "-" is stdout.
func openArtifacts(pcapPath, svgPath string, snaplen int, stdout io.Writer) (*artifacts, error) {
	a := &artifacts{svgPath: svgPath}
	switch pcapPath {
	case "":
	case "-":
		a.pcap = pcapng.NewWriter(stdout, snaplen)
	default:
		f, err := os.Create(pcapPath)
		if err != nil {
			return nil, fmt.Errorf("--pcapng: %w", err)
		}
		a.pcapFile = f
		a.pcap = pcapng.NewWriter(f, snaplen)
	}
	if svgPath == "-" {
		return nil, fmt.Errorf("--svg wants a file name")
	}
	return a, nil
}

// svgName is the file of the n-th journey's SVG (1-based): FILE for the
// first, FILE-2.svg and so on for the next ones.
func svgName(path string, n int) string {
	if n == 1 {
		return path
	}
	base := strings.TrimSuffix(path, ".svg")
	return fmt.Sprintf("%s-%d.svg", base, n)
}

// write adds one journey to the artifacts.
func (a *artifacts) write(j *journey.Journey) error {
	if a.pcap != nil {
		if len(j.Frames) == 0 {
			a.bare++
		}
		if err := a.pcap.Write(j); err != nil {
			return err
		}
	}
	if a.svgPath != "" {
		a.svgs++
		name := svgName(a.svgPath, a.svgs)
		f, err := os.Create(name)
		if err != nil {
			return fmt.Errorf("--svg: %w", err)
		}
		err = picture.Build(j).SVG(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("--svg %s: %w", name, err)
		}
	}
	return nil
}

// close finishes the pcapng stream; the summary says what was written.
func (a *artifacts) close() (summary string, err error) {
	if a.pcap != nil {
		err = a.pcap.Close()
		if a.pcapFile != nil {
			if cerr := a.pcapFile.Close(); err == nil {
				err = cerr
			}
			summary = fmt.Sprintf("wrote %d packets to %s", a.pcap.Packets(), a.pcapFile.Name())
		} else {
			summary = fmt.Sprintf("wrote %d packets to standard output", a.pcap.Packets())
		}
	}
	if a.bare > 0 {
		summary += fmt.Sprintf(" (%d journey(s) carried no packet bytes: the events were lost, or a daemon without --pcapng support traced them; try --no-daemon)", a.bare)
	}
	if a.svgs > 0 {
		if summary != "" {
			summary += "; "
		}
		summary += fmt.Sprintf("wrote %d SVG picture(s) to %s", a.svgs, a.svgPath)
		if a.svgs > 1 {
			summary += fmt.Sprintf(" .. %s", svgName(a.svgPath, a.svgs))
		}
	}
	return summary, err
}
