package fleet

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"

	"github.com/nats-io/nats.go/jetstream"
)

// leases claims partitions in the lease bucket. A key exists while its
// owner renews it; the bucket's TTL removes it otherwise, so a dead
// analyzer's partitions become free. Create is atomic (it fails when the
// key exists), and renewal updates only the revision this owner wrote, so
// at most one analyzer holds a partition at a time (up to the moment a
// silent owner notices its failed renewal, at most one renewal period).
type leases struct {
	kv    jetstream.KeyValue
	owner string
	mu    sync.Mutex     // held is also touched by releases that wait for a worker
	held  map[int]uint64 // partition → revision of our lease
}

func partKey(p int) string      { return "part." + strconv.Itoa(p) }
func memberKey(o string) string { return "member." + o }

// claim tries to take partition p.
func (l *leases) claim(ctx context.Context, p int) (bool, error) {
	rev, err := l.kv.Create(ctx, partKey(p), []byte(l.owner))
	if errors.Is(err, jetstream.ErrKeyExists) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("claiming partition %d: %w", p, err)
	}
	l.mu.Lock()
	l.held[p] = rev
	l.mu.Unlock()
	return true, nil
}

// renew extends the lease on p; an error means it is no longer ours (or
// the broker is unreachable, in which case it may lapse: stop either way).
func (l *leases) renew(ctx context.Context, p int) error {
	l.mu.Lock()
	cur := l.held[p]
	l.mu.Unlock()
	rev, err := l.kv.Update(ctx, partKey(p), []byte(l.owner), cur)
	l.mu.Lock()
	defer l.mu.Unlock()
	if err != nil {
		delete(l.held, p)
		return fmt.Errorf("renewing partition %d: %w", p, err)
	}
	l.held[p] = rev
	return nil
}

// release frees p if it is still ours.
func (l *leases) release(ctx context.Context, p int) {
	l.mu.Lock()
	rev, ok := l.held[p]
	delete(l.held, p)
	l.mu.Unlock()
	if ok {
		_ = l.kv.Delete(ctx, partKey(p), jetstream.LastRevision(rev))
	}
}

// members announces this analyzer and returns how many are alive.
func (l *leases) members(ctx context.Context) (int, error) {
	if _, err := l.kv.Put(ctx, memberKey(l.owner), []byte("1")); err != nil {
		return 0, fmt.Errorf("announcing member: %w", err)
	}
	keys, err := l.kv.ListKeys(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, fmt.Errorf("listing members: %w", err)
	}
	n := 0
	for k := range keys.Keys() {
		if strings.HasPrefix(k, "member.") {
			n++
		}
	}
	return max(n, 1), nil
}

// leave removes the member key so the others rebalance at once.
func (l *leases) leave(ctx context.Context) { _ = l.kv.Delete(ctx, memberKey(l.owner)) }
