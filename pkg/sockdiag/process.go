package sockdiag

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Process is a process holding a socket.
type Process struct {
	PID  int
	Comm string // /proc/PID/comm
}

func (p Process) String() string { return fmt.Sprintf("%s (pid %d)", p.Comm, p.PID) }

// FindProcess returns a process that holds the socket with inode
// sockInode, by reading /proc/*/fd (links "socket:[inode]"; socket inodes
// are unique on the machine, so the process may live in any namespace: a
// socket created in a pod's namespace by a process outside it counts too).
// ok is false when no process can be found (gone, or /proc not readable).
func FindProcess(procRoot string, sockInode uint32) (Process, bool) {
	if procRoot == "" {
		procRoot = "/proc"
	}
	ents, err := os.ReadDir(procRoot)
	if err != nil {
		return Process{}, false
	}
	want := "socket:[" + strconv.FormatUint(uint64(sockInode), 10) + "]"
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		dir := filepath.Join(procRoot, e.Name())
		if holds(dir, want) {
			comm, _ := os.ReadFile(filepath.Join(dir, "comm"))
			return Process{PID: pid, Comm: strings.TrimSpace(string(comm))}, true
		}
	}
	return Process{}, false
}

func holds(dir, want string) bool {
	fds, err := os.ReadDir(filepath.Join(dir, "fd"))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		if l, err := os.Readlink(filepath.Join(dir, "fd", fd.Name())); err == nil && l == want {
			return true
		}
	}
	return false
}
