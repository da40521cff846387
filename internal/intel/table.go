package intel

import (
	"cmp"
	"encoding/binary"
	"math/bits"
	"net/netip"
	"slices"
)

// Table is an immutable longest-prefix-match index over feed entries, safe for concurrent
// lookups.
//
// Nested prefixes are flattened at build time into disjoint address intervals, each labelled
// with its most specific prefix, so a lookup is one binary search over interval starts. A
// direct index on the top bits of the address narrows that search to one or two cache lines,
// and each interval record carries its prefix length and entry range, so a lookup touches about
// two cache lines and no pointers: no trie nodes to chase, 12 bytes per IPv4 interval.
type Table struct {
	entries  []Entry // sorted by prefix, entries with the same prefix adjacent
	prefixes int
	v4       family[uint32]
	v6       family[u128]
}

// Match is the most specific listed prefix containing an address.
type Match struct {
	// Prefix is the matched prefix.
	Prefix netip.Prefix
	// Entries are the feeds that list exactly Prefix, at most one per feed, in the order they
	// were given to NewTable. The slice shares the table's storage: do not modify it.
	Entries []Entry
}

// u128 is an address as a big-endian integer; IPv4 addresses use the low 32 bits.
type u128 struct{ hi, lo uint64 }

func (a u128) less(b u128) bool { return a.hi < b.hi || a.hi == b.hi && a.lo < b.lo }

func (a u128) add1() u128 {
	lo, carry := bits.Add64(a.lo, 1, 0)
	return u128{a.hi + carry, lo}
}

// hostMask has the low h bits set.
func hostMask(h int) u128 {
	if h >= 64 {
		return u128{1<<(h-64) - 1, ^uint64(0)}
	}
	return u128{0, 1<<h - 1}
}

// noEntry marks an interval that no prefix covers.
const noEntry = ^uint32(0)

// rec is one interval: from start up to the next record's start, the most specific prefix is
// bits long and listed by entries[ent:ent+n], with meta = bits<<24 | n.
type rec[K comparable] struct {
	start     K
	ent, meta uint32
}

type family[K comparable] struct {
	recs  []rec[K] // ascending starts, recs[0].start is the family's first address
	index []uint32 // index[b]: the record holding the first address of bucket b
	base  uint64   // top bits (all 32 of IPv4, 64 of IPv6) of the first prefix
	shift uint     // bucket b holds addresses whose top bits t have (t-base)>>shift == b
}

// push appends an interval, merging it with the previous one when that turned out empty or
// has the same prefix, so the table holds only real boundaries.
func (f *family[K]) push(r rec[K]) {
	n := len(f.recs)
	switch {
	case n > 0 && f.recs[n-1].start == r.start:
		f.recs[n-1] = r
		if n > 1 && f.recs[n-2].ent == r.ent {
			f.recs = f.recs[:n-1]
		}
	case n == 0 || f.recs[n-1].ent != r.ent:
		f.recs = append(f.recs, r)
	}
}

// item is the sort key of one entry: address, then prefix length (containing prefixes first),
// then input order.
type item struct {
	key u128
	ord uint64 // bits<<32 | index in entries
}

// sort4 sorts IPv4 items as packed integers (address, length, index in 32+6+26 bits) with a
// stable radix sort on the address and length, which keeps equal prefixes in input order: many
// times faster than comparing structs, which otherwise is most of the time to load a big feed.
func sort4(its []item) {
	a, buf := make([]uint64, len(its)), make([]uint64, len(its))
	for i, it := range its {
		a[i] = it.key.lo<<32 | it.ord>>32<<26 | it.ord&(1<<26-1)
	}
	for shift := 26; shift < 64; shift += 10 { // four passes: the result ends up in a again
		var count [1 << 10]int
		for _, v := range a {
			count[v>>shift&(1<<10-1)]++
		}
		sum := 0
		for d, c := range count {
			count[d], sum = sum, sum+c
		}
		for _, v := range a {
			d := v >> shift & (1<<10 - 1)
			buf[count[d]] = v
			count[d]++
		}
		a, buf = buf, a
	}
	for i, p := range a {
		its[i] = item{u128{0, p >> 32}, p>>26&63<<32 | p&(1<<26-1)}
	}
}

// NewTable builds a table from entries, normalising each prefix as ParsePrefix does. Invalid
// (zero) prefixes are skipped and an entry repeating a prefix already listed by the same feed is
// dropped. The entries slice is not retained.
func NewTable(entries []Entry) *Table {
	n4 := 0
	for _, e := range entries {
		if e.Prefix.IsValid() && (e.Prefix.Addr().Is4() || e.Prefix.Addr().Is4In6() && e.Prefix.Bits() >= 96) {
			n4++
		}
	}
	its := [2][]item{make([]item, 0, n4), make([]item, 0, len(entries)-n4)}
	for i, e := range entries {
		p := e.Prefix
		if !p.IsValid() {
			continue
		}
		a, b := p.Addr().WithZone(""), p.Bits()
		if a.Is4In6() && b >= 96 {
			a, b = a.Unmap(), b-96
		}
		p, _ = a.Prefix(b)
		if a.Is4() {
			its[0] = append(its[0], item{key4(p.Addr()), uint64(b)<<32 | uint64(i)})
		} else {
			its[1] = append(its[1], item{key6(p.Addr()), uint64(b)<<32 | uint64(i)})
		}
	}
	t := &Table{entries: make([]Entry, 0, len(its[0])+len(its[1]))}
	var groups [2][]uint32 // start of each distinct prefix's entries
	for f := range its {
		if f == 0 && len(entries) < 1<<26 {
			sort4(its[0])
		} else {
			slices.SortFunc(its[f], func(a, b item) int {
				if a.key != b.key {
					if a.key.less(b.key) {
						return -1
					}
					return 1
				}
				return cmp.Compare(a.ord, b.ord)
			})
		}
		for j, it := range its[f] {
			e := entries[uint32(it.ord)]
			if j > 0 && it.key == its[f][j-1].key && it.ord>>32 == its[f][j-1].ord>>32 {
				g := groups[f][len(groups[f])-1]
				if slices.ContainsFunc(t.entries[g:], func(x Entry) bool { return x.Feed == e.Feed }) {
					continue
				}
			} else {
				groups[f] = append(groups[f], uint32(len(t.entries)))
			}
			e.Prefix = netip.PrefixFrom(addrOf(it.key, f == 1), int(it.ord>>32))
			t.entries = append(t.entries, e)
		}
		groups[f] = append(groups[f], uint32(len(t.entries))) // where the last prefix ends
		its[f] = nil                                          // let the sort buffer go
	}
	t.prefixes = len(groups[0]) + len(groups[1]) - 2
	// Each prefix opens at most one interval and closes at most one.
	t.v4.recs = make([]rec[uint32], 0, 2*len(groups[0]))
	t.v6.recs = make([]rec[u128], 0, 2*len(groups[1]))
	sweep(t, groups[0], 32, u128{0, 1<<32 - 1}, func(r rec[u128]) {
		t.v4.push(rec[uint32]{uint32(r.start.lo), r.ent, r.meta})
	})
	sweep(t, groups[1], 128, u128{^uint64(0), ^uint64(0)}, t.v6.push)
	t.v4.buildIndex(func(k uint32) uint64 { return uint64(k) }, func(i int, first uint64) bool {
		return uint64(t.v4.recs[i].start) <= first
	})
	t.v6.buildIndex(func(k u128) uint64 { return k.hi }, func(i int, first uint64) bool {
		s := t.v6.recs[i].start
		return s.hi < first || s.hi == first && s.lo == 0
	})
	return t
}

func key4(a netip.Addr) u128 {
	b := a.As4()
	return u128{0, uint64(binary.BigEndian.Uint32(b[:]))}
}

func key6(a netip.Addr) u128 {
	b := a.As16()
	return u128{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func addrOf(k u128, v6 bool) netip.Addr {
	if !v6 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(k.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k.hi)
	binary.BigEndian.PutUint64(b[8:], k.lo)
	return netip.AddrFrom16(b)
}

// sweep turns the prefixes whose entries start at groups (its last element ends the last one),
// sorted by address and then containing prefixes first, into the intervals of "most specific
// prefix here", keeping a stack of the prefixes open at the current address.
func sweep(t *Table, groups []uint32, width int, maxAddr u128, emit func(rec[u128])) {
	if len(groups) < 2 {
		return
	}
	type open struct {
		end       u128
		ent, meta uint32
	}
	var stack []open
	top := func(start u128) rec[u128] {
		if len(stack) == 0 {
			return rec[u128]{start: start, ent: noEntry}
		}
		o := stack[len(stack)-1]
		return rec[u128]{start, o.ent, o.meta}
	}
	emit(top(u128{}))
	for i, g := range groups[:len(groups)-1] {
		end := groups[i+1]
		p := t.entries[g].Prefix
		var start u128
		if width == 128 {
			start = key6(p.Addr())
		} else {
			start = key4(p.Addr())
		}
		for len(stack) > 0 && stack[len(stack)-1].end.less(start) {
			last := stack[len(stack)-1].end
			stack = stack[:len(stack)-1]
			emit(top(last.add1()))
		}
		m := hostMask(width - p.Bits())
		stack = append(stack, open{u128{start.hi | m.hi, start.lo | m.lo}, g, uint32(p.Bits())<<24 | min(end-g, 1<<24-1)})
		emit(top(start))
	}
	for len(stack) > 0 {
		last := stack[len(stack)-1].end
		stack = stack[:len(stack)-1]
		if last != maxAddr {
			emit(top(last.add1()))
		}
	}
}

// buildIndex fills the top-bits index over the span of the record starts (not the whole
// family, since real IPv6 feeds all sit inside 2000::/3) with about two buckets per record, at
// most 4 Mi: measured, a bigger index beats a longer search. top gives a start's top 32 or 64
// bits, and startsBy(i, first) tells whether record i starts at or before the address whose top
// bits are first and whose other bits are 0.
func (f *family[K]) buildIndex(top func(K) uint64, startsBy func(i int, first uint64) bool) {
	n := len(f.recs)
	if n == 0 {
		return
	}
	f.base = top(f.recs[min(1, n-1)].start)
	span := top(f.recs[n-1].start) - f.base
	f.shift = uint(max(bits.Len64(span)-min(bits.Len(uint(n))+1, 22), 0))
	nb := int(span>>f.shift) + 1
	f.index = make([]uint32, nb+1)
	i := 0
	for b := range nb {
		for i+1 < n && startsBy(i+1, f.base+uint64(b)<<f.shift) {
			i++
		}
		f.index[b] = uint32(i)
	}
	f.index[nb] = uint32(n - 1)
}

// bucket returns the range of records that can hold an address whose top bits are t.
func (f *family[K]) bucket(t uint64) (lo, hi int) {
	if t < f.base {
		return 0, 0 // before the first prefix
	}
	b := min((t-f.base)>>f.shift, uint64(len(f.index)-2))
	return int(f.index[b]), int(f.index[b+1])
}

// Lookup returns the most specific prefix containing addr and the entries listing it. IPv4-mapped
// IPv6 addresses are looked up as IPv4 and zones are ignored, so a socket's address matches the
// way it is written in feeds. It does not allocate.
func (t *Table) Lookup(addr netip.Addr) (Match, bool) {
	var r rec[uint32]
	switch {
	case addr.Is4() || addr.Is4In6():
		if len(t.v4.index) == 0 {
			return Match{}, false
		}
		addr = addr.Unmap()
		b := addr.As4()
		k := binary.BigEndian.Uint32(b[:])
		lo, hi := t.v4.bucket(uint64(k))
		for lo < hi {
			if m := int(uint(lo+hi+1) >> 1); t.v4.recs[m].start <= k {
				lo = m
			} else {
				hi = m - 1
			}
		}
		r = t.v4.recs[lo]
	case addr.Is6():
		if len(t.v6.index) == 0 {
			return Match{}, false
		}
		k := key6(addr)
		lo, hi := t.v6.bucket(k.hi)
		for lo < hi {
			if m := int(uint(lo+hi+1) >> 1); !k.less(t.v6.recs[m].start) {
				lo = m
			} else {
				hi = m - 1
			}
		}
		r.ent, r.meta = t.v6.recs[lo].ent, t.v6.recs[lo].meta
	default:
		return Match{}, false
	}
	if r.ent == noEntry {
		return Match{}, false
	}
	p, _ := addr.Prefix(int(r.meta >> 24))
	end := r.ent + r.meta&(1<<24-1)
	return Match{Prefix: p, Entries: t.entries[r.ent:end:end]}, true
}

// Len is the number of distinct prefixes in the table.
func (t *Table) Len() int { return t.prefixes }
