package tcp

import (
	"fmt"
	"testing"
	"unsafe"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

func TestInsertRange(t *testing.T) {
	var rs []Range
	for _, r := range []Range{{10, 20}, {30, 40}, {5, 8}, {19, 31}, {50, 60}, {8, 10}} {
		rs = InsertRange(rs, r)
	}
	want := []Range{{5, 40}, {50, 60}}
	if fmt.Sprint(rs) != fmt.Sprint(want) {
		t.Errorf("got %v, want %v", rs, want)
	}
}

func TestSegmentLen(t *testing.T) {
	for _, tc := range []struct {
		n    int
		f    model.TCPFlags
		want int
	}{{0, model.FlagSYN, 1}, {10, model.FlagACK, 10}, {10, model.FlagFIN | model.FlagACK, 11}, {10, model.FlagRST, 0}, {0, model.FlagSYN | model.FlagFIN, 2}} {
		if got := SegmentLen(tc.n, tc.f); got != tc.want {
			t.Errorf("SegmentLen(%d, %s) = %d, want %d", tc.n, tc.f, got, tc.want)
		}
	}
}

// TestSizeAcrossWrap: sizes count the 4 GiB wraps of the sequence space.
func TestSizeAcrossWrap(t *testing.T) {
	var c Conn
	c.Init()
	o, r := c.Orig(), c.Resp()
	isn := uint32(0xfffff000)
	o.Init(true, isn, isn+1)
	o.State, r.State = Established, Established
	// 5 GiB later, in 1 GiB steps, acked by the peer.
	end := isn + 1
	for i := 0; i < 5; i++ {
		end += 1 << 30
		o.UpdateLastSeq(end)
	}
	if rel, under := o.RelativeSeq(end, o.LastSeq, uint32(o.SeqWraps)); under || rel != 5<<30+1 {
		t.Errorf("RelativeSeq = %d, %v", rel, under)
	}
	if got := o.Size(r); got != 5<<30 {
		t.Errorf("Size = %d, want %d", got, uint64(5<<30))
	}
}

func TestReuse(t *testing.T) {
	var c Conn
	c.Init()
	c.Orig().Init(true, 100, 101)
	c.Orig().State = SynSent
	if c.IsReuse(model.FlagSYN, 100) {
		t.Error("a retransmitted SYN is not a new connection")
	}
	if !c.IsReuse(model.FlagSYN, 5000) {
		t.Error("a SYN with a new ISN is a new connection")
	}
	if c.IsReuse(model.FlagACK, 5000) {
		t.Error("only SYNs start connections")
	}
}

// TestSizes pins the sizes the flow table's memory budget counts on.
func TestSizes(t *testing.T) {
	if n := unsafe.Sizeof(Endpoint{}); n != 64 {
		t.Errorf("Endpoint is %d bytes, want 64", n)
	}
	if n := unsafe.Sizeof(Conn{}); n != 136 {
		t.Errorf("Conn is %d bytes, want 136", n)
	}
}
