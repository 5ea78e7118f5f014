// Package resolvconf reads the DNS configuration (/etc/resolv.conf) a
// network namespace's processes use: a pod's, through /proc/PID/root of a
// process in the pod's network namespace.
package resolvconf

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Config is what resolv.conf says.
type Config struct {
	Nameservers []netip.Addr
	Search      []string
	Options     []string
}

// Parse reads resolv.conf text; lines it does not know are ignored, as the
// resolver does.
func Parse(text string) Config {
	var c Config
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		line := sc.Text()
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			if a, err := netip.ParseAddr(f[1]); err == nil {
				c.Nameservers = append(c.Nameservers, a)
			}
		case "search":
			c.Search = f[1:]
		case "domain":
			if c.Search == nil {
				c.Search = f[1:2]
			}
		case "options":
			c.Options = append(c.Options, f[1:]...)
		}
	}
	return c
}

// ErrNoProcess is returned when no process lives in the namespace.
var ErrNoProcess = errors.New("no process in the network namespace")

// OfNetns reads the resolv.conf of a process whose network namespace has
// inode netnsInode (this process excepted: its threads visit namespaces),
// through procRoot ("" for /proc). It returns the configuration and the
// PID it was read through.
func OfNetns(procRoot string, netnsInode uint64) (Config, int, error) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return Config{}, 0, fmt.Errorf("resolv.conf: %w", err)
	}
	self := os.Getpid()
	var firstErr error
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 || pid == self {
			continue
		}
		dir := filepath.Join(procRoot, e.Name())
		var st unix.Stat_t
		if unix.Stat(filepath.Join(dir, "ns", "net"), &st) != nil || st.Ino != netnsInode {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "root", "etc", "resolv.conf"))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		return Parse(string(b)), pid, nil
	}
	if firstErr != nil {
		return Config{}, 0, fmt.Errorf("resolv.conf: %w", firstErr)
	}
	return Config{}, 0, ErrNoProcess
}
