package tracer

import "testing"

// A tracepoint set attaches all or nothing: when one name fails, the ones
// attached before it in the same call are detached again, so a fallback
// backend never runs next to half of this one (duplicate events).
func TestAttachTracepointsAllOrNothing(t *testing.T) {
	kpRequireRoot(t)
	tr, err := New(Settings{})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	if err := tr.AttachTracepoints(TPDrop); err != nil {
		t.Fatalf("attach %s: %v", TPDrop, err)
	}
	if err := tr.AttachTracepoints(TPRx, TPTx, "no_such_tracepoint"); err == nil {
		t.Fatal("attaching an unknown tracepoint succeeded")
	}
	if len(tr.tpLinks) != 1 || tr.tpLinks[TPDrop] == nil {
		t.Errorf("after the failed call %d tracepoints stay attached %v, want only %s (attached before it)", len(tr.tpLinks), keys(tr.tpLinks), TPDrop)
	}
	if err := tr.AttachTracepoints(TPRx, TPTx); err != nil || len(tr.tpLinks) != 3 {
		t.Errorf("attach again: %v (%d attached)", err, len(tr.tpLinks))
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
