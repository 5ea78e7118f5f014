package journey

import (
	"testing"
	"time"
)

// BenchmarkStitch measures the builder on recorded journeys: one op is one
// event added (plus its share of expiry and finishing).
func BenchmarkStitch(b *testing.B) {
	path := forwardPath()
	path.add(KindTx, nsNodeB, "cni0", synPod).add(KindRx, nsPodB, "eth0", synPod).add(KindConsume, nsPodB, "", synPod)
	per := len(path.evts)
	bl := NewBuilder(Options{Grace: time.Millisecond, ReplyWait: time.Millisecond, Idle: time.Millisecond})
	var t uint64
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		e := path.evts[i%per]
		if i%per == 0 {
			t += 10_000_000
		}
		e.Journey = uint64(i/per+1) * 2
		e.Skb = uint64(i/per + 1)
		e.TimeNs = t + e.TimeNs
		bl.Add(e)
		if i%(per*64) == per*64-1 {
			bl.Expire(t + uint64(time.Second))
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
