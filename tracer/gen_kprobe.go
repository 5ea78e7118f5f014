package tracer

// The kprobe backend (../bpf/kprobe.c) is a second object sharing the maps of
// the first one at load time. Its programs read arguments from registers, so
// it is compiled per architecture (x86 only so far: the BPF headers are
// x86's vmlinux.h); kprobe_other.go stands in on the others.
//go:generate go tool bpf2go -tags linux -target amd64 kprobe ../bpf/kprobe.c -- -I../bpf -Wall -Werror
