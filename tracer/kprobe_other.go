//go:build linux && !386 && !amd64

package tracer

import (
	"fmt"
	"runtime"

	"github.com/cilium/ebpf"
)

// loadKprobe: the kprobe object reads arguments from registers and is built
// for x86 only (see gen_kprobe.go).
func loadKprobe() (*ebpf.CollectionSpec, error) {
	return nil, fmt.Errorf("kprobe backend not built for %s: %w", runtime.GOARCH, ebpf.ErrNotSupported)
}
