package cluster

import (
	"fmt"

	"github.com/skbtrail/skbtrail/tests/procs"
)

// proc is a process the cluster started, known and ended by its PID.
type proc = procs.Proc

// startProc starts `ip netns exec netns bin args...` with its stdout and
// stderr appended to logPath. The process gets SIGKILL if the test process
// dies first.
func startProc(name, netns, logPath, bin string, args ...string) (*proc, error) {
	return startProcOut(name, netns, logPath, logPath, bin, args...)
}

// startProcOut is startProc with stdout appended to outPath instead.
func startProcOut(name, netns, logPath, outPath, bin string, args ...string) (*proc, error) {
	return startCmd(name, logPath, outPath, append([]string{"ip", "netns", "exec", netns, bin}, args...)...)
}

// startCmd starts argv with its stderr appended to logPath and its stdout
// to outPath (see procs.Start).
func startCmd(name, logPath, outPath string, argv ...string) (*proc, error) {
	p, err := procs.Start(name, logPath, outPath, argv...)
	if err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return p, nil
}

// logTail returns the last n lines of the log at path.
func logTail(path string, n int) string { return procs.LogTail(path, n) }
