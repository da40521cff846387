package detect

import (
	"encoding/binary"
	"fmt"
	"hash/maphash"
	"math/bits"
	"net/netip"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// genTable is a bounded map that forgets what has not been touched
// lately, in O(1) amortised per operation: entries live in a current and
// an old generation; a lookup that finds an entry in the old one moves it
// to the current one; when the current generation is full it becomes the
// old one and whatever was still old is dropped. An entry idle for a whole
// generation (capacity/2 new or touched keys) is forgotten, so a burst of
// new keys (spoofed sources, one-off pairs) costs no sorting and cannot
// grow memory beyond the capacity. evictOldest's exact order is not
// needed for per-pair statistics, and its O(n log n) batches were most
// of the traffic detectors' time when most keys are new.
type genTable[K comparable, V any] struct {
	cur, old map[K]V
	half     int
	// promoted counts old entries copied into cur this generation: they
	// stay in old too, because deleting from a Go map leaves tombstones
	// that make every later miss probe longer (most lookups are misses).
	promoted int
	// Evicted counts entries dropped.
	Evicted int
}

func newGenTable[K comparable, V any](capacity int) *genTable[K, V] {
	half := max(1, capacity/2)
	return &genTable[K, V]{cur: make(map[K]V), old: map[K]V{}, half: half}
}

// get returns k's value, refreshing it.
func (t *genTable[K, V]) get(k K) (V, bool) {
	if v, ok := t.cur[k]; ok {
		return v, true
	}
	v, ok := t.old[k]
	if ok {
		t.promoted++
		t.put(k, v)
	}
	return v, ok
}

// put stores k in the current generation.
func (t *genTable[K, V]) put(k K, v V) {
	t.cur[k] = v
	if len(t.cur) >= t.half {
		t.Evicted += len(t.old) - t.promoted
		t.old, t.cur, t.promoted = t.cur, make(map[K]V, t.half/4), 0
	}
}

func (t *genTable[K, V]) len() int { return len(t.cur) + len(t.old) - t.promoted }

// all calls fn once for every live entry.
func (t *genTable[K, V]) all(fn func(K, V)) {
	for k, v := range t.cur {
		fn(k, v)
	}
	for k, v := range t.old {
		if _, ok := t.cur[k]; !ok {
			fn(k, v)
		}
	}
}

// pairHasher turns a pair of addresses and a port into a 64-bit map key:
// maps keyed by uint64 take the runtime's fast path, where 50-byte struct
// keys spent most of the traffic detectors' time hashing and comparing.
// The seed is random per process, so colliding pairs cannot be crafted in
// advance; two pairs colliding by chance (about 1 in 10⁸ at a million
// pairs) would share statistics.
type pairHasher struct{ k0, k1 uint64 }

func newPairHasher() pairHasher {
	s := maphash.MakeSeed()
	return pairHasher{maphash.Comparable(s, 0), maphash.Comparable(s, 1)}
}

func mix(a, b uint64) uint64 {
	hi, lo := bits.Mul64(a, b)
	return hi ^ lo
}

func (h pairHasher) hash(src, dst netip.Addr, port uint16, proto model.Proto, tag uint8) uint64 {
	s, d := src.As16(), dst.As16()
	s0, s1 := binary.LittleEndian.Uint64(s[:8]), binary.LittleEndian.Uint64(s[8:])
	d0, d1 := binary.LittleEndian.Uint64(d[:8]), binary.LittleEndian.Uint64(d[8:])
	x := mix(s0^h.k0, s1^h.k1)
	x = mix(x^d0, d1^h.k0)
	return mix(x^(uint64(port)|uint64(proto)<<16|uint64(tag)<<24), h.k1^0x9e3779b97f4a7c15)
}

// firstCache remembers the first sighting of keys in a direct-mapped
// array: one memory access per lookup, no allocation, bounded size. A new
// key overwrites whatever shared its slot, which is how one-off keys are
// forgotten; a key seen again before that is admitted to full state. The
// array starts small and doubles (rehashing) while puts outnumber half its
// slots, up to the capacity, so a small input does not pay for a large one.
type firstCache[V any] struct {
	tags []uint64
	vals []V
	mask uint64
	max  int
	puts int
}

func newFirstCache[V any](capacity int) *firstCache[V] {
	n := 1
	for n < capacity {
		n <<= 1
	}
	c := &firstCache[V]{max: n}
	c.resize(min(n, 4096))
	return c
}

func (c *firstCache[V]) resize(n int) {
	tags, vals := c.tags, c.vals
	c.tags, c.vals, c.mask, c.puts = make([]uint64, n), make([]V, n), uint64(n-1), 0
	for i, t := range tags {
		if t != 0 {
			j := t & c.mask
			c.tags[j], c.vals[j] = t, vals[i]
			c.puts++
		}
	}
}

// take returns and forgets h's first sighting, if it is still there.
func (c *firstCache[V]) take(h uint64) (V, bool) {
	h |= 1 // 0 marks an empty slot
	i := h & c.mask
	if c.tags[i] != h {
		var zero V
		return zero, false
	}
	c.tags[i] = 0
	return c.vals[i], true
}

// put records h's first sighting.
func (c *firstCache[V]) put(h uint64, v V) {
	if c.puts++; c.puts > len(c.tags)/2 && len(c.tags) < c.max {
		c.resize(2 * len(c.tags))
	}
	h |= 1
	i := h & c.mask
	c.tags[i], c.vals[i] = h, v
}

// evictionNote is a detector's word on pairs it had to forget.
func evictionNote(name string, evicted, capacity int) []string {
	if evicted == 0 {
		return nil
	}
	return []string{fmt.Sprintf("%s: %d idle pairs forgotten to stay within max_pairs (%d); raise it if the input has more active pairs", name, evicted, capacity)}
}
