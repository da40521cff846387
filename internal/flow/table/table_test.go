package table

import (
	"math/rand/v2"
	"slices"
	"testing"
	"unsafe"
)

type rec struct{ n int }

func key(i int) Key {
	var k Key
	k.A[15], k.B[15] = byte(i), byte(i>>8)
	k.AP, k.BP, k.Proto = uint16(i>>16), 80, 6
	return k
}

// TestAgainstMap runs random inserts, lookups and deletes against a Go map,
// through several resizes and many backward shifts.
func TestAgainstMap(t *testing.T) {
	tb := New[rec](0)
	tb.seed = 1 // fixed, so that a failure repeats
	ref := map[Key]ID{}
	r := rand.New(rand.NewPCG(1, 2))
	for op := 0; op < 200_000; op++ {
		i := r.IntN(5000)
		k := key(i)
		id, v := tb.Find(&k)
		if want, ok := ref[k]; ok != (v != nil) || ok && id != want {
			t.Fatalf("op %d: Find(%d) = %d, %v; want %d, %v", op, i, id, v != nil, want, ok)
		}
		switch {
		case v == nil && r.IntN(3) > 0:
			id, v = tb.Insert(&k)
			v.n = i
			ref[k] = id
		case v != nil && v.n != i:
			t.Fatalf("op %d: record of %d holds %d", op, i, v.n)
		case v != nil && r.IntN(2) == 0:
			tb.Delete(id)
			delete(ref, k)
		}
		if tb.Len() != len(ref) {
			t.Fatalf("op %d: Len %d, want %d", op, tb.Len(), len(ref))
		}
	}
	n := 0
	for id, v := range tb.All() {
		if k := tb.Key(id); ref[*k] != id || v.n != int(k.A[15])|int(k.B[15])<<8|int(k.AP)<<16 {
			t.Fatalf("All: id %d key %v record %d", id, k, v.n)
		}
		n++
	}
	if n != len(ref) {
		t.Errorf("All yielded %d records, want %d", n, len(ref))
	}
}

func TestRecency(t *testing.T) {
	tb := New[rec](0)
	var ids [4]ID
	for i := range ids {
		k := key(i)
		ids[i], _ = tb.Insert(&k)
	}
	tb.Touch(ids[0])
	tb.Touch(ids[2])
	var order []ID
	for tb.Len() > 0 {
		id := tb.Oldest()
		order = append(order, id)
		tb.Delete(id)
	}
	if want := []ID{ids[1], ids[3], ids[0], ids[2]}; !slices.Equal(order, want) {
		t.Errorf("eviction order %v, want %v", order, want)
	}
	if tb.Oldest() != 0 {
		t.Errorf("Oldest of an empty table = %d", tb.Oldest())
	}
}

func TestTimers(t *testing.T) {
	tb := New[rec](0)
	r := rand.New(rand.NewPCG(3, 4))
	due := map[ID]int64{}
	for i := 0; i < 1000; i++ {
		k := key(i)
		id, _ := tb.Insert(&k)
		d := 1 + r.Int64N(500)
		tb.Schedule(id, d)
		due[id] = d
	}
	// Move some deadlines, cancel some, delete some records.
	for id := range due {
		switch r.IntN(4) {
		case 0:
			due[id] = 1 + r.Int64N(500)
			tb.Schedule(id, due[id])
		case 1:
			tb.Schedule(id, 0)
			delete(due, id)
		case 2:
			tb.Delete(id)
			delete(due, id)
		}
	}
	for id, d := range due {
		if got := tb.Deadline(id); got != d {
			t.Fatalf("Deadline(%d) = %d, want %d", id, got, d)
		}
	}
	last := int64(0)
	for n := 0; ; n++ {
		id, d := tb.Earliest()
		if id == 0 {
			if n != len(due) {
				t.Errorf("%d timers fired, want %d", n, len(due))
			}
			break
		}
		if d < last || d != due[id] {
			t.Fatalf("timer %d: due %d after %d (want %d)", id, d, last, due[id])
		}
		last = d
		tb.Schedule(id, 0)
	}
}

// TestEntrySize pins the per-record overhead the package doc states.
func TestEntrySize(t *testing.T) {
	if n := unsafe.Sizeof(entry[struct{ x int64 }]{}) - 8; n != 56 {
		t.Errorf("entry overhead %d bytes, want 56", n)
	}
}

func BenchmarkFind(b *testing.B) {
	tb := New[rec](0)
	keys := make([]Key, 5000)
	for i := range keys {
		keys[i] = key(i)
		tb.Insert(&keys[i])
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, v := tb.Find(&keys[i%len(keys)]); v == nil {
			b.Fatal("not found")
		}
	}
}
