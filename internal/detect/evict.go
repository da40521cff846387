package detect

import (
	"slices"
	"time"
)

// evictOldest removes the quarter of m whose entries were seen longest ago
// (at least one) and returns how many it removed. Evicting in batches
// keeps a flood of new keys (spoofed sources) at amortised O(log n) per
// insert, where finding the single oldest entry each time would be O(n).
func evictOldest[K comparable, V any](m map[K]V, lastSeen func(V) time.Time) int {
	return evictOldestFunc(m, lastSeen, nil)
}

// evictOldestFunc is evictOldest calling onEvict (when not nil) for each
// entry before it goes, so a detector can report what it knew.
func evictOldestFunc[K comparable, V any](m map[K]V, lastSeen func(V) time.Time, onEvict func(K, V)) int {
	if len(m) == 0 {
		return 0
	}
	// Integer times sort several times faster than time.Time.
	times := make([]int64, 0, len(m))
	for _, v := range m {
		times = append(times, lastSeen(v).UnixNano())
	}
	slices.Sort(times)
	n := max(1, len(m)/4)
	cutoff := times[n-1]
	removed := 0
	for k, v := range m {
		if removed == n {
			break
		}
		if lastSeen(v).UnixNano() <= cutoff {
			if onEvict != nil {
				onEvict(k, v)
			}
			delete(m, k)
			removed++
		}
	}
	return removed
}
