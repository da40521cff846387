// Package table is the flow tracker's connection table: records stored in
// chunks that the garbage collector need not scan (when the record type
// holds no pointers), found by a compact 5-tuple Key through an
// open-addressing index, kept in order of last activity so that the least
// recently active one can be evicted, and ordered on a timer heap. It
// knows nothing about TCP; package flow decides what the records hold and
// when they go.
//
// Per record it costs the record itself, 56 bytes of key and links, about
// 11–21 bytes of index and 16 of timer heap.
package table

import (
	"encoding/binary"
	"iter"
	"math/bits"
	"math/rand/v2"
)

// Key identifies a connection regardless of direction: the caller puts
// the lower endpoint in A (see Key.Order). Addresses are 16 bytes; an
// IPv4 address is in the last four with KeyV6 clear. Key is comparable.
type Key struct {
	A, B   [16]byte
	AP, BP uint16
	Proto  uint8
	Flags  uint8 // KeyV6, KeyOneWay
}

// Key flags.
const (
	KeyV6     uint8 = 1 << iota // the addresses are IPv6
	KeyOneWay                   // keyed by direction (ICMP messages without a reply type)
)

// Less reports whether endpoint (a, ap) sorts before (b, bp): by address
// bytes, then port. Callers order a Key's endpoints with it.
func Less(a *[16]byte, ap uint16, b *[16]byte, bp uint16) bool {
	a0, b0 := binary.BigEndian.Uint64(a[:8]), binary.BigEndian.Uint64(b[:8])
	if a0 != b0 {
		return a0 < b0
	}
	a1, b1 := binary.BigEndian.Uint64(a[8:]), binary.BigEndian.Uint64(b[8:])
	if a1 != b1 {
		return a1 < b1
	}
	return ap < bp
}

// hash mixes the key with a per-table seed (wyhash's folded multiply), so
// that crafted addresses cannot pile up in one run of the index. Only the
// 32 bits the index uses are returned.
func (k *Key) hash(seed uint64) uint32 {
	const m1, m2, m3 = 0xa0761d6478bd642f, 0xe7037ed1a0b428db, 0x8ebc6af09c88c6e3
	le := binary.LittleEndian
	p := uint64(k.AP) | uint64(k.BP)<<16 | uint64(k.Proto)<<32 | uint64(k.Flags)<<40
	h := mix(le.Uint64(k.A[:8])^seed^m1, le.Uint64(k.A[8:])^m2) ^
		mix(le.Uint64(k.B[:8])^m3, le.Uint64(k.B[8:])^seed) ^
		mix(p^m2^seed, m3)
	h = mix(h^m1, seed^m2)
	return uint32(h ^ h>>32)
}

// equal is k == *o, without the call to memequal that == makes.
func (k *Key) equal(o *Key) bool {
	le := binary.LittleEndian
	return le.Uint64(k.A[8:]) == le.Uint64(o.A[8:]) && le.Uint64(k.B[8:]) == le.Uint64(o.B[8:]) &&
		k.AP == o.AP && k.BP == o.BP && k.Proto == o.Proto && k.Flags == o.Flags &&
		le.Uint64(k.A[:8]) == le.Uint64(o.A[:8]) && le.Uint64(k.B[:8]) == le.Uint64(o.B[:8])
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

// ID names a record for as long as it is in the table; 0 is no record.
// IDs are reused after Delete.
type ID uint32

const (
	chunkBits = 10
	chunkSize = 1 << chunkBits
)

type entry[V any] struct {
	key Key
	// prev and next link the recency list (ID 0 is its head); on the
	// free list, next links free entries.
	prev, next ID
	hidx       int32 // index in the timer heap, -1 when not scheduled
	val        V
}

type timer struct {
	due int64
	id  ID
}

// Table holds records of type V. It is not safe for concurrent use.
type Table[V any] struct {
	chunks [][]entry[V]
	used   ID // entries handed out so far, including entry 0
	free   ID // first free entry, 0 when none
	n      int
	seed   uint64
	// slots is the index: per slot the key's 32-bit hash (high half) and
	// the ID (low half); 0 is an empty slot. Linear probing, deletion by
	// backward shift, so no tombstones.
	slots []uint64
	mask  uint32
	heap  []timer
}

// New returns an empty table; hint is the number of records expected
// soon (the table grows as needed).
func New[V any](hint int) *Table[V] {
	t := &Table[V]{seed: rand.Uint64()}
	c := 64
	for c*3/4 < hint {
		c <<= 1
	}
	t.slots = make([]uint64, c)
	t.mask = uint32(c - 1)
	t.grow() // entry 0: the recency list's head
	t.used = 1
	e := t.at(0)
	e.hidx = -1
	return t
}

// Len is the number of records.
func (t *Table[V]) Len() int { return t.n }

func (t *Table[V]) at(id ID) *entry[V] { return &t.chunks[id>>chunkBits][id&(chunkSize-1)] }

func (t *Table[V]) grow() {
	t.chunks = append(t.chunks, make([]entry[V], chunkSize))
}

// Find returns the record with key k, or 0 and nil.
func (t *Table[V]) Find(k *Key) (ID, *V) {
	h := k.hash(t.seed)
	for i := h & t.mask; ; i = (i + 1) & t.mask {
		s := t.slots[i]
		if s == 0 {
			return 0, nil
		}
		if uint32(s>>32) == h {
			if e := t.at(ID(s)); e.key.equal(k) {
				return ID(s), &e.val
			}
		}
	}
}

// Insert adds a zeroed record with key k, which must not be in the table,
// as the most recently active one.
func (t *Table[V]) Insert(k *Key) (ID, *V) {
	var id ID
	if t.free != 0 {
		id = t.free
		t.free = t.at(id).next
	} else {
		if t.used>>chunkBits == ID(len(t.chunks)) {
			t.grow()
		}
		id = t.used
		t.used++
	}
	e := t.at(id)
	*e = entry[V]{key: *k, hidx: -1}
	t.n++
	if uint64(t.n)*4 > uint64(len(t.slots))*3 {
		t.resize(len(t.slots) * 2)
	}
	h := k.hash(t.seed)
	i := h & t.mask
	for t.slots[i] != 0 {
		i = (i + 1) & t.mask
	}
	t.slots[i] = uint64(h)<<32 | uint64(id)
	t.link(id, e)
	return id, &e.val
}

func (t *Table[V]) resize(n int) {
	old := t.slots
	t.slots = make([]uint64, n)
	t.mask = uint32(n - 1)
	for _, s := range old {
		if s == 0 {
			continue
		}
		i := uint32(s>>32) & t.mask
		for t.slots[i] != 0 {
			i = (i + 1) & t.mask
		}
		t.slots[i] = s
	}
}

// Delete removes a record (and its timer); its ID may be reused.
func (t *Table[V]) Delete(id ID) {
	e := t.at(id)
	t.Schedule(id, 0)
	t.unlink(e)
	t.unindex(id, e.key.hash(t.seed))
	e.next = t.free
	t.free = id
	t.n--
}

func (t *Table[V]) unindex(id ID, h uint32) {
	i := h & t.mask
	for ID(t.slots[i]) != id {
		i = (i + 1) & t.mask
	}
	// Backward shift: move later entries of the run into the hole when
	// their home slot does not lie after it.
	for j := i; ; {
		j = (j + 1) & t.mask
		s := t.slots[j]
		if s == 0 {
			break
		}
		home := uint32(s>>32) & t.mask
		if (j-home)&t.mask >= (j-i)&t.mask {
			t.slots[i] = s
			i = j
		}
	}
	t.slots[i] = 0
}

// Key returns the key of a record.
func (t *Table[V]) Key(id ID) *Key { return &t.at(id).key }

// Get returns the record with this ID.
func (t *Table[V]) Get(id ID) *V { return &t.at(id).val }

// All yields every record, in no particular order. Records must not be
// added or deleted meanwhile.
func (t *Table[V]) All() iter.Seq2[ID, *V] {
	return func(yield func(ID, *V) bool) {
		for id := t.at(0).next; id != 0; {
			e := t.at(id)
			next := e.next
			if !yield(id, &e.val) {
				return
			}
			id = next
		}
	}
}

// Recency list: entry 0's next is the least recently active record, its
// prev the most recent.

func (t *Table[V]) link(id ID, e *entry[V]) {
	head := t.at(0)
	last := head.prev
	e.prev, e.next = last, 0
	t.at(last).next = id
	head.prev = id
}

func (t *Table[V]) unlink(e *entry[V]) {
	t.at(e.prev).next = e.next
	t.at(e.next).prev = e.prev
}

// Touch makes a record the most recently active.
func (t *Table[V]) Touch(id ID) {
	if t.at(0).prev == id {
		return
	}
	e := t.at(id)
	t.unlink(e)
	t.link(id, e)
}

// Oldest returns the least recently active record, 0 when empty.
func (t *Table[V]) Oldest() ID { return t.at(0).next }

// Timer heap: one deadline per record, earliest first.

// Schedule sets a record's deadline (any int64 clock; 0 cancels it).
func (t *Table[V]) Schedule(id ID, due int64) {
	e := t.at(id)
	switch {
	case due == 0 && e.hidx >= 0:
		t.heapRemove(int(e.hidx))
		e.hidx = -1
	case due == 0:
	case e.hidx < 0:
		e.hidx = int32(len(t.heap))
		t.heap = append(t.heap, timer{due, id})
		t.up(int(e.hidx))
	default:
		i := int(e.hidx)
		old := t.heap[i].due
		t.heap[i].due = due
		if due < old {
			t.up(i)
		} else if due > old {
			t.down(i)
		}
	}
}

// Deadline returns a record's deadline, 0 when none.
func (t *Table[V]) Deadline(id ID) int64 {
	if e := t.at(id); e.hidx >= 0 {
		return t.heap[e.hidx].due
	}
	return 0
}

// Earliest returns the record with the earliest deadline and the
// deadline; 0, 0 when nothing is scheduled.
func (t *Table[V]) Earliest() (ID, int64) {
	if len(t.heap) == 0 {
		return 0, 0
	}
	return t.heap[0].id, t.heap[0].due
}

func (t *Table[V]) heapRemove(i int) {
	last := len(t.heap) - 1
	if i != last {
		t.heap[i] = t.heap[last]
		t.at(t.heap[i].id).hidx = int32(i)
	}
	t.heap = t.heap[:last]
	if i < last {
		t.down(i)
		t.up(i)
	}
}

func (t *Table[V]) up(i int) {
	h := t.heap
	x := h[i]
	for i > 0 {
		p := (i - 1) / 2
		if h[p].due <= x.due {
			break
		}
		h[i] = h[p]
		t.at(h[i].id).hidx = int32(i)
		i = p
	}
	h[i] = x
	t.at(x.id).hidx = int32(i)
}

func (t *Table[V]) down(i int) {
	h := t.heap
	x := h[i]
	for {
		l := 2*i + 1
		if l >= len(h) {
			break
		}
		m := l
		if r := l + 1; r < len(h) && h[r].due < h[l].due {
			m = r
		}
		if x.due <= h[m].due {
			break
		}
		h[i] = h[m]
		t.at(h[i].id).hidx = int32(i)
		i = m
	}
	h[i] = x
	t.at(x.id).hidx = int32(i)
}
