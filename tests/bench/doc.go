// Package bench holds skbtrail's benchmarks (`make bench`, see docs/bench.md):
//
//   - BenchmarkStitch (stitch_test.go): the journey builder (Add + Expire)
//     fed with events recorded from the lab (testdata/recorded.json, written
//     by `skbtrail-bench record`), replayed at a chosen event rate. Together
//     with tracer's BenchmarkDecode it gives the user-space cost per event.
//   - cmd/skbtrail-bench: the throughput benchmark (iperf3 through the lab's
//     VXLAN path with nothing attached, the daemon, the daemon plus a trace,
//     and tcpdump), the per-program in-kernel cost, and the summary of the
//     micro benchmarks.
package bench
