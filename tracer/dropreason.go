package tracer

import (
	"fmt"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// DropReasons maps the running kernel's enum skb_drop_reason values to
// names without the SKB_DROP_REASON_ prefix. Values differ between kernels,
// so they are read from BTF, never hard-coded.
type DropReasons map[uint32]string

// LoadDropReasons reads enum skb_drop_reason from the kernel's BTF.
func LoadDropReasons() (DropReasons, error) {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("load kernel BTF: %w", err)
	}
	return dropReasonsFrom(spec)
}

func dropReasonsFrom(spec *btf.Spec) (DropReasons, error) {
	var enum *btf.Enum
	if err := spec.TypeByName("skb_drop_reason", &enum); err != nil {
		return nil, fmt.Errorf("find enum skb_drop_reason in BTF: %w", err)
	}
	m := make(DropReasons, len(enum.Values))
	for _, v := range enum.Values {
		m[uint32(v.Value)] = strings.TrimPrefix(v.Name, "SKB_DROP_REASON_")
	}
	return m, nil
}

// Name returns the reason's name, or its subsystem and number when the
// kernel's enum does not list it (subsystem reasons use the upper 16 bits).
func (d DropReasons) Name(r uint32) string {
	if n, ok := d[r]; ok {
		return n
	}
	if sub := r >> 16; sub != 0 {
		return fmt.Sprintf("SUBSYS_%d_%d", sub, r&0xffff)
	}
	return fmt.Sprintf("REASON_%d", r)
}

// Value returns the number of a named reason.
func (d DropReasons) Value(name string) (uint32, bool) {
	for v, n := range d {
		if n == name {
			return v, true
		}
	}
	return 0, false
}
