package main

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// processBPF lists the BPF program ids and the link types a process holds
// file descriptors for (from /proc/PID/fdinfo), which tells our daemon's
// programs apart from anyone else's.
func processBPF(pid int) (progs []ebpf.ProgramID, links map[string]int, err error) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	links = map[string]int{}
	for _, ent := range ents {
		target, err := os.Readlink(filepath.Join(dir, ent.Name()))
		if err != nil {
			continue
		}
		switch target {
		case "anon_inode:bpf-prog":
			if v := fdinfoField(pid, ent.Name(), "prog_id"); v != "" {
				if id, err := strconv.ParseUint(v, 10, 32); err == nil {
					progs = append(progs, ebpf.ProgramID(id))
				}
			}
		case "anon_inode:bpf_link":
			if v := fdinfoField(pid, ent.Name(), "link_type"); v != "" {
				links[v]++
			}
		}
	}
	return progs, links, nil
}

func fdinfoField(pid int, fd, key string) string {
	f, err := os.Open(fmt.Sprintf("/proc/%d/fdinfo/%s", pid, fd))
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && k == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// progStat is one program's counters at one moment.
type progStat struct {
	id      ebpf.ProgramID
	name    string
	typ     string
	runtime time.Duration
	runs    uint64
}

// snapshot reads the run-time counters of the given programs.
func snapshot(ids []ebpf.ProgramID) (map[ebpf.ProgramID]progStat, error) {
	out := map[ebpf.ProgramID]progStat{}
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, ierr := p.Info()
		st, serr := p.Stats()
		p.Close()
		if ierr != nil || serr != nil {
			return nil, fmt.Errorf("program %d: %v", id, errorsJoin(ierr, serr))
		}
		out[id] = progStat{id: id, name: info.Name, typ: info.Type.String(), runtime: st.Runtime, runs: st.RunCount}
	}
	return out, nil
}

func errorsJoin(errs ...error) error {
	var s []string
	for _, e := range errs {
		if e != nil {
			s = append(s, e.Error())
		}
	}
	if len(s) == 0 {
		return nil
	}
	return fmt.Errorf("%s", strings.Join(s, "; "))
}

func (d progStat) avgNs() float64 {
	if d.runs == 0 {
		return 0
	}
	return float64(d.runtime.Nanoseconds()) / float64(d.runs)
}

// deltas are what the programs did between two snapshots (after - before), grouped by program name (the
// same program attached many times, e.g. one netfilter observer per
// namespace and hook, is loaded once, so this is normally one per name),
// busiest first.
func deltas(before, after map[ebpf.ProgramID]progStat) []progStat {
	byName := map[string]*progStat{}
	for id, a := range after {
		b := before[id]
		d := byName[a.name]
		if d == nil {
			d = &progStat{id: id, name: a.name, typ: a.typ}
			byName[a.name] = d
		}
		d.runtime += a.runtime - b.runtime
		d.runs += a.runs - b.runs
	}
	var out []progStat
	for _, d := range byName {
		out = append(out, *d)
	}
	sort.Slice(out, func(i, k int) bool {
		if out[i].runtime != out[k].runtime {
			return out[i].runtime > out[k].runtime
		}
		return out[i].name < out[k].name
	})
	return out
}

// skbtrailName reports whether a BPF program name is one of skbtrail's
// (names are cut to 15 characters by the kernel).
func skbtrailName(name string) bool {
	for _, p := range []string{"tp_", "nf_stage", "kprobe_", "kretprobe_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// foreignPrograms returns skbtrail-named programs loaded on the machine that
// are not in ours: another skbtrail (someone's test, daemon or trace) slows
// every packet of the machine, the baseline included.
func foreignPrograms(ours map[ebpf.ProgramID]bool) []string {
	var out []string
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return out
		}
		id = next
		if ours[id] {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		p.Close()
		if err == nil && skbtrailName(info.Name) {
			out = append(out, fmt.Sprintf("%s#%d", info.Name, id))
		}
	}
}

// enableStats turns on the kernel's BPF run-time accounting for as long as
// the returned closer is open (BPF_ENABLE_STATS: the same switch as the
// kernel.bpf_stats_enabled sysctl, but owned by a file descriptor, so it is
// switched off again even if this process dies).
func enableStats() (io.Closer, error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("BPF_ENABLE_STATS: %w", err)
	}
	return c, nil
}

func sysctlValue(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}
