package picture

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

// SVG geometry.
const (
	svgWidth   = 900
	svgMargin  = 20
	lineHeight = 18
	devWidth   = 120
	devHeight  = 26
	devGap     = 26
	arrowGap   = 34
)

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// SVG writes the picture as a standalone SVG document: one box per
// namespace (top to bottom in the order the packet went), its devices as
// small boxes joined by arrows, NAT and encapsulation as notes, the box
// where the journey ended outlined in red (failure) or green.
func (p Picture) SVG(w io.Writer) error {
	var b strings.Builder
	y := svgMargin
	var body strings.Builder
	fmt.Fprintf(&body, `<text x="%d" y="%d" class="title">%s</text>`+"\n", svgMargin, y+14, esc(p.Title))
	y += 28
	fmt.Fprintf(&body, `<text x="%d" y="%d" class="%s">%s</text>`+"\n", svgMargin, y+12, verdictClass(p), esc("verdict: "+p.Verdict))
	y += 28
	for i, s := range p.Segments {
		if i > 0 {
			x := svgMargin + 40
			fmt.Fprintf(&body, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="arrow" marker-end="url(#head)"/>`+"\n", x, y, x, y+arrowGap-6)
			y += arrowGap
		}
		rows, rx := 1, svgMargin+12 // the device rows, placed as below
		for range s.Devices {
			if rx+devWidth > svgWidth-svgMargin-12 {
				rows, rx = rows+1, svgMargin+12
			}
			rx += devWidth + devGap
		}
		h := 32 + rows*(devHeight+10) + 12 + len(s.Notes)*lineHeight + 8
		if s.End != "" {
			h += lineHeight + 4
		}
		class := "ns"
		if s.End != "" {
			class = "ns end-ok"
			if s.Bad {
				class = "ns end-bad"
			}
		}
		fmt.Fprintf(&body, `<g class="segment"><rect x="%d" y="%d" width="%d" height="%d" rx="8" class="%s"/>`+"\n", svgMargin, y, svgWidth-2*svgMargin, h, class)
		fmt.Fprintf(&body, `<text x="%d" y="%d" class="label">%s</text>`+"\n", svgMargin+12, y+20, esc(s.Label()))
		dx, dy := svgMargin+12, y+32
		for k, d := range s.Devices {
			if dx+devWidth > svgWidth-svgMargin-12 {
				dx, dy = svgMargin+12, dy+devHeight+10
			} else if k > 0 {
				fmt.Fprintf(&body, `<line x1="%d" y1="%d" x2="%d" y2="%d" class="arrow" marker-end="url(#head)"/>`+"\n", dx-devGap, dy+devHeight/2, dx-4, dy+devHeight/2)
			}
			fmt.Fprintf(&body, `<rect x="%d" y="%d" width="%d" height="%d" rx="4" class="dev"/><text x="%d" y="%d" class="devname">%s</text>`+"\n",
				dx, dy, devWidth, devHeight, dx+devWidth/2, dy+17, esc(d))
			dx += devWidth + devGap
		}
		ty := dy + devHeight + 10 + 12
		for _, n := range s.Notes {
			fmt.Fprintf(&body, `<text x="%d" y="%d" class="note">%s</text>`+"\n", svgMargin+12, ty, esc(n))
			ty += lineHeight
		}
		if s.End != "" {
			mark := "\u2713 "
			if s.Bad {
				mark = "\u2717 "
			}
			fmt.Fprintf(&body, `<text x="%d" y="%d" class="%s">%s</text>`+"\n", svgMargin+12, ty+2, verdictClass(p), esc(mark+s.End))
		}
		body.WriteString("</g>\n")
		y += h
	}
	if p.Reply != "" {
		y += 10
		fmt.Fprintf(&body, `<text x="%d" y="%d" class="note">%s</text>`+"\n", svgMargin, y+12, esc(p.Reply))
		y += lineHeight
	}
	height := y + svgMargin
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="monospace" font-size="13">
<title>%s</title>
<defs><marker id="head" markerWidth="8" markerHeight="8" refX="7" refY="4" orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#555"/></marker></defs>
<style>
.title{font-size:15px;font-weight:bold}
.ns{fill:#f7f7f7;stroke:#888;stroke-width:1}
.end-bad{stroke:#c00;stroke-width:3}
.end-ok{stroke:#080;stroke-width:3}
.label{font-weight:bold}
.dev{fill:#fff;stroke:#446;stroke-width:1}
.devname{text-anchor:middle}
.note{fill:#333}
.arrow{stroke:#555;stroke-width:1.5}
.bad{fill:#c00;font-weight:bold}
.ok{fill:#080;font-weight:bold}
</style>
<rect width="100%%" height="100%%" fill="#fff"/>
`, svgWidth, height, svgWidth, height, esc(p.Title+": "+p.Verdict))
	b.WriteString(body.String())
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func verdictClass(p Picture) string {
	for _, s := range p.Segments {
		if s.End != "" && s.Bad {
			return "bad"
		}
	}
	return "ok"
}
