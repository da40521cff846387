package intel

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"unsafe"
)

// naiveLookup is the obviously correct reference: scan every entry, keep the longest prefix, and
// list its entries once per feed in input order.
func naiveLookup(entries []Entry, addr netip.Addr) (Match, bool) {
	addr = addr.Unmap().WithZone("")
	best := -1
	var m Match
	for _, e := range entries {
		if e.Prefix.Contains(addr) && e.Prefix.Bits() > best {
			best, m.Prefix = e.Prefix.Bits(), e.Prefix
		}
	}
	if best < 0 {
		return Match{}, false
	}
	for _, e := range entries {
		if e.Prefix == m.Prefix && !slices.ContainsFunc(m.Entries, func(x Entry) bool { return x.Feed == e.Feed }) {
			m.Entries = append(m.Entries, e)
		}
	}
	return m, true
}

func randAddr(r *rand.Rand, v6 bool) netip.Addr {
	if v6 {
		var b [16]byte
		b[0], b[1] = 0x20, 0x01 // one /16, so that random prefixes nest and overlap
		for i := 2; i < 16; i++ {
			b[i] = byte(r.Uint32())
		}
		if r.IntN(4) == 0 { // and a sparse region to exercise long runs of emptiness
			b[2], b[3] = 0, 0
		}
		return netip.AddrFrom16(b)
	}
	var b [4]byte
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	if r.IntN(2) == 0 {
		b[0] = 10 // dense region
	}
	return netip.AddrFrom4(b)
}

// randEntries makes n deterministic random entries across a few feeds, with lengths that nest.
func randEntries(r *rand.Rand, n int, v6share int) []Entry {
	entries := make([]Entry, 0, n)
	for i := range n {
		v6 := r.IntN(100) < v6share
		a := randAddr(r, v6)
		bits := 8 + r.IntN(25) // 8..32
		if v6 {
			bits = 16 + r.IntN(113) // 16..128
		}
		if i > 0 && r.IntN(5) == 0 { // reuse an earlier prefix: duplicates across and within feeds
			p := entries[r.IntN(len(entries))].Prefix
			a, bits = p.Addr(), p.Bits()
		}
		entries = append(entries, Entry{
			Prefix: netip.PrefixFrom(a, bits).Masked(),
			Feed:   fmt.Sprintf("feed%d", r.IntN(3)),
			Ref:    fmt.Sprintf("R%d", i),
		})
	}
	return entries
}

// probes returns addresses at and around each prefix's edges plus random ones, where an
// off-by-one in the interval table would show.
func probes(r *rand.Rand, entries []Entry, n int) []netip.Addr {
	var out []netip.Addr
	for _, e := range entries {
		first := e.Prefix.Addr()
		last := lastAddr(e.Prefix)
		out = append(out, first, last, first.Prev(), last.Next())
	}
	for range n {
		out = append(out, randAddr(r, r.IntN(2) == 0))
	}
	return slices.DeleteFunc(out, func(a netip.Addr) bool { return !a.IsValid() })
}

func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func checkAgainstNaive(t *testing.T, entries []Entry, addrs []netip.Addr) {
	t.Helper()
	tab := NewTable(entries)
	for _, a := range addrs {
		got, gok := tab.Lookup(a)
		want, wok := naiveLookup(entries, a)
		if gok != wok || got.Prefix != want.Prefix || !slices.Equal(got.Entries, want.Entries) {
			t.Fatalf("Lookup(%s) = %v %v, want %v %v", a, got, gok, want, wok)
		}
	}
}

func TestTableEdges(t *testing.T) {
	p := netip.MustParsePrefix
	entries := []Entry{
		{Prefix: p("0.0.0.0/0"), Feed: "a"},
		{Prefix: p("255.255.255.255/32"), Feed: "a"},
		{Prefix: p("0.0.0.0/32"), Feed: "b"},
		{Prefix: p("10.0.0.0/8"), Feed: "a"},
		{Prefix: p("10.0.0.0/8"), Feed: "b", Ref: "x"},
		{Prefix: p("10.0.0.0/8"), Feed: "a", Ref: "dup"}, // same feed again: dropped
		{Prefix: p("10.0.0.0/24"), Feed: "c"},
		{Prefix: p("10.0.0.255/32"), Feed: "c"},
		{Prefix: p("10.0.1.0/24"), Feed: "c"},
		{Prefix: p("::/0"), Feed: "a"},
		{Prefix: p("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"), Feed: "a"},
		{Prefix: p("2001:db8::/32"), Feed: "b"},
		{Prefix: p("2001:db8::/64"), Feed: "b"},
		{Prefix: p("2001:db8:0:0:8000::/65"), Feed: "c"},
		{Prefix: p("::ffff:192.0.2.0/120"), Feed: "m"}, // stored as 192.0.2.0/24
		{Prefix: p("198.51.100.9/24"), Feed: "h"},      // host bits: masked
		{}, // invalid: skipped
	}
	r := rand.New(rand.NewPCG(1, 2))
	addrs := append(probes(r, entries[:len(entries)-1], 1000),
		netip.MustParseAddr("::ffff:192.0.2.7"), netip.MustParseAddr("fe80::1%eth0"), netip.Addr{})
	norm := slices.Clone(entries)
	for i := range norm {
		if norm[i].Prefix.IsValid() {
			norm[i].Prefix, _ = ParsePrefix(norm[i].Prefix.String())
		}
	}
	checkAgainstNaive(t, norm[:len(norm)-1], addrs)

	tab := NewTable(entries)
	if tab.Len() != 14 {
		t.Errorf("Len = %d, want 14", tab.Len())
	}
	m, ok := tab.Lookup(netip.MustParseAddr("10.0.0.0"))
	if !ok || m.Prefix != p("10.0.0.0/24") {
		t.Errorf("10.0.0.0 → %v", m)
	}
	m, _ = tab.Lookup(netip.MustParseAddr("10.200.0.1"))
	if len(m.Entries) != 2 || m.Entries[0].Ref != "" || m.Entries[1].Ref != "x" {
		t.Errorf("10.200.0.1 entries = %v, want a then b", m.Entries)
	}
	if m, ok := tab.Lookup(netip.MustParseAddr("::ffff:192.0.2.7")); !ok || m.Prefix != p("192.0.2.0/24") {
		t.Errorf("mapped lookup → %v %v", m, ok)
	}
	if _, ok := NewTable(nil).Lookup(netip.MustParseAddr("1.2.3.4")); ok {
		t.Error("empty table matched")
	}
}

func TestTableRandomAgainstNaive(t *testing.T) {
	for seed := range uint64(20) {
		r := rand.New(rand.NewPCG(seed, 99))
		entries := randEntries(r, 1+r.IntN(400), 40)
		checkAgainstNaive(t, entries, probes(r, entries, 2000))
	}
}

// sizeBytes is the table's own memory beyond the entries' strings, for the benchmark report.
func (t *Table) sizeBytes() int {
	return cap(t.entries)*int(unsafe.Sizeof(Entry{})) +
		cap(t.v4.recs)*int(unsafe.Sizeof(t.v4.recs[0])) + len(t.v4.index)*4 +
		cap(t.v6.recs)*int(unsafe.Sizeof(rec[u128]{})) + len(t.v6.index)*4
}

// benchEntries makes n prefixes spread like real feeds: IPv4 /16–/32 anywhere, IPv6 /32–/64 in
// 2000::/4.
func benchEntries(n, v6share int) []Entry {
	r := rand.New(rand.NewPCG(1, 1))
	entries := make([]Entry, n)
	for i := range entries {
		var p netip.Prefix
		if r.IntN(100) < v6share {
			p = netip.PrefixFrom(benchAddr6(r), 32+r.IntN(33))
		} else {
			p = netip.PrefixFrom(netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, r.Uint32()))), 16+r.IntN(17))
		}
		entries[i] = Entry{Prefix: p.Masked(), Feed: "bench"}
	}
	return entries
}

func benchAddr6(r *rand.Rand) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], 2<<60|r.Uint64()>>4)
	binary.BigEndian.PutUint64(b[8:], r.Uint64())
	return netip.AddrFrom16(b)
}

// BenchmarkLoad1M builds a table from 1M prefixes (90% IPv4); the issue asks for well under a
// second. table-MB is the table's memory including the 1M entries.
func BenchmarkLoad1M(b *testing.B) {
	entries := benchEntries(1_000_000, 10)
	b.ReportAllocs()
	var tab *Table
	for b.Loop() {
		tab = NewTable(entries)
	}
	b.ReportMetric(float64(tab.sizeBytes())/(1<<20), "table-MB")
	b.ReportMetric(float64(tab.Len()), "prefixes")
}

// BenchmarkParseLoad1M is the same from feed text, as Load does it.
func BenchmarkParseLoad1M(b *testing.B) {
	var buf bytes.Buffer
	for _, e := range benchEntries(1_000_000, 10) {
		fmt.Fprintf(&buf, "%s ; SBL%d\n", e.Prefix, e.Prefix.Bits())
	}
	b.SetBytes(int64(buf.Len()))
	b.ReportAllocs()
	for b.Loop() {
		entries, errs := ParseFeed(bytes.NewReader(buf.Bytes()), "bench")
		if len(errs) > 0 {
			b.Fatal(errs[0])
		}
		NewTable(entries)
	}
}

// benchLookup times lookups in a table of n prefixes, half of them for addresses inside a listed
// prefix and half random, cycling through more addresses than the caches hold.
func benchLookup(b *testing.B, n int, v6 bool) {
	share := 0
	if v6 {
		share = 100
	}
	entries := benchEntries(n, share)
	tab := NewTable(entries)
	r := rand.New(rand.NewPCG(2, 2))
	addrs := make([]netip.Addr, 1<<16)
	for i := range addrs {
		switch {
		case i%2 == 0:
			addrs[i] = entries[r.IntN(len(entries))].Prefix.Addr()
		case v6:
			addrs[i] = benchAddr6(r)
		default:
			addrs[i] = netip.AddrFrom4([4]byte(binary.BigEndian.AppendUint32(nil, r.Uint32())))
		}
	}
	b.ReportAllocs()
	hits, i := 0, 0
	for b.Loop() {
		if _, ok := tab.Lookup(addrs[i&(len(addrs)-1)]); ok {
			hits++
		}
		i++
	}
	b.ReportMetric(float64(hits)/float64(i), "hit-ratio")
}

// BenchmarkLookup4 is one IPv4 lookup in a 1M-prefix table (target ≥ 10M/s, 0 allocs).
func BenchmarkLookup4(b *testing.B) { benchLookup(b, 1_000_000, false) }

// BenchmarkLookup4Feed is the same in a 20k-prefix table, the size of a typical set of
// public feeds (FireHOL level1 plus Spamhaus DROP).
func BenchmarkLookup4Feed(b *testing.B) { benchLookup(b, 20_000, false) }

// BenchmarkLookup6 is one IPv6 lookup in a 1M-prefix table.
func BenchmarkLookup6(b *testing.B) { benchLookup(b, 1_000_000, true) }
