package detect

import (
	"hash/maphash"
	"net/netip"
	"slices"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// evictOldest removes the quarter of *m whose entries were seen longest ago
// (at least one) and returns how many it removed. Evicting in batches
// keeps a flood of new keys (spoofed sources) at amortised O(log n) per
// insert, where finding the single oldest entry each time would be O(n).
func evictOldest[K comparable, V any](m *map[K]V, lastSeen func(V) time.Time) int {
	return evictOldestFunc(m, lastSeen, nil)
}

// evictOldestFunc is evictOldest calling onEvict (when not nil) for each
// entry before it goes, so a detector can report what it knew.
//
// The survivors move to a new map: deleting in place leaves tombstones
// that, under a flood's constant churn, made the old map keep growing.
func evictOldestFunc[K comparable, V any](m *map[K]V, lastSeen func(V) time.Time, onEvict func(K, V)) int {
	old := *m
	if len(old) == 0 {
		return 0
	}
	// Integer times sort several times faster than time.Time.
	times := make([]int64, 0, len(old))
	for _, v := range old {
		times = append(times, lastSeen(v).UnixNano())
	}
	slices.Sort(times)
	n := max(1, len(old)/4)
	cutoff := times[n-1]
	kept := make(map[K]V, len(old))
	removed := 0
	for k, v := range old {
		if removed < n && lastSeen(v).UnixNano() <= cutoff {
			if onEvict != nil {
				onEvict(k, v)
			}
			removed++
			continue
		}
		kept[k] = v
	}
	*m = kept
	return removed
}

// probation holds the first record of sources not yet worth a table entry.
// A spoofed flood brings a new source with every packet, each seen once:
// keeping full state for each would mean allocating, then evicting in
// batches, for nothing. A source gets full state when it comes back while
// its first record is still here; the slots are overwritten on collision,
// so the cost is fixed and nothing is ever evicted.
type probation struct {
	slots []probationSlot
	seed  maphash.Seed
}

type probationSlot struct {
	key  netip.Addr
	used bool
	conn model.Conn
}

func newProbation(slots int) *probation {
	n := 1
	for n < slots {
		n <<= 1
	}
	return &probation{slots: make([]probationSlot, n), seed: maphash.MakeSeed()}
}

func (p *probation) slot(key netip.Addr) *probationSlot {
	return &p.slots[maphash.Comparable(p.seed, key)&uint64(len(p.slots)-1)]
}

// take returns and forgets key's first record, if it is still here.
func (p *probation) take(key netip.Addr) (model.Conn, bool) {
	s := p.slot(key)
	if !s.used || s.key != key {
		return model.Conn{}, false
	}
	s.used = false
	return s.conn, true
}

// put keeps c as key's first record, over whatever shared its slot.
func (p *probation) put(key netip.Addr, c *model.Conn) {
	s := p.slot(key)
	s.key, s.used, s.conn = key, true, *c
}

// uidSet is a fixed-size set of connection uids: a collision overwrites,
// so it may forget, never grow.
type uidSet struct {
	slots []string
	seed  maphash.Seed
}

func newUIDSet(n int) *uidSet { return &uidSet{slots: make([]string, n), seed: maphash.MakeSeed()} }

func (u *uidSet) slot(uid string) *string {
	return &u.slots[maphash.String(u.seed, uid)%uint64(len(u.slots))]
}

func (u *uidSet) put(uid string) { *u.slot(uid) = uid }

// take reports whether uid is in the set, removing it.
func (u *uidSet) take(uid string) bool {
	s := u.slot(uid)
	if uid == "" || *s != uid {
		return false
	}
	*s = ""
	return true
}
