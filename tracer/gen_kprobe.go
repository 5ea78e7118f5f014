package tracer

// The kprobe backend (../bpf/kprobe.c) is a second object sharing the maps of
// the first one at load time. Its programs read arguments from registers, so
// it is compiled per architecture; kprobe_other.go covers the others.
//go:generate go tool bpf2go -tags linux -target amd64 kprobe ../bpf/kprobe.c -- -I../bpf -Wall -Werror
