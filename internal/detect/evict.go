package detect

import (
	"slices"
	"time"
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
