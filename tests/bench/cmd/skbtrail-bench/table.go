package main

import (
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// table prints rows as an aligned Markdown table (so that docs/bench.md can
// take it as it is): the first column left-aligned, the others right-aligned.
type table struct {
	rows [][]string
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

func (t *table) addf(format string, args ...any) {
	t.add(strings.Split(fmt.Sprintf(format, args...), "\t")...)
}

func (t *table) print(w io.Writer) {
	if len(t.rows) == 0 {
		return
	}
	n := 0
	for _, r := range t.rows {
		n = max(n, len(r))
	}
	width := make([]int, n)
	for _, r := range t.rows {
		for i, c := range r {
			width[i] = max(width[i], utf8.RuneCountInString(c), 3)
		}
	}
	line := func(r []string) {
		var b strings.Builder
		b.WriteString("|")
		for i := range n {
			c := ""
			if i < len(r) {
				c = r[i]
			}
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			if i == 0 {
				b.WriteString(" " + c + pad + " |")
			} else {
				b.WriteString(" " + pad + c + " |")
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(t.rows[0])
	var b strings.Builder
	b.WriteString("|")
	for i := range n {
		if i == 0 {
			b.WriteString(" " + strings.Repeat("-", width[i]) + " |")
		} else {
			b.WriteString(" " + strings.Repeat("-", width[i]-1) + ": |")
		}
	}
	fmt.Fprintln(w, b.String())
	for _, r := range t.rows[1:] {
		line(r)
	}
}
