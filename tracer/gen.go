package tracer

// The kernel programs live in ../bpf; bpf2go compiles them and generates the
// Go types of every struct they share with user space (never mirror by hand).
//go:generate go tool bpf2go -tags linux -target bpfel -type event -type event_cap -type filter -type settings -type activity -type flow_key -type tuple -type addr_family -type event_kind -type event_source -type stat_index bpf ../bpf/skbtrail.c -- -I../bpf -Wall -Werror
