package fleet

import (
	"context"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/config"
)

// Init creates the streams and the lease bucket, or updates them to cfg's
// limits; running it again changes nothing. A stream's partition count is
// not stored: sentries and analyzers must share fleet.partitions.
func Init(ctx context.Context, js jetstream.JetStream, cfg config.Fleet) error {
	streams := []jetstream.StreamConfig{{
		Name:        ConnStream,
		Description: "tcpsentry connection records: tcpsentry.conn.<src partition>.<dst partition>.<host>",
		Subjects:    []string{connPrefix + ">"},
		Retention:   jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxAge: cfg.ConnMaxAge.Duration, MaxBytes: orUnlimited(cfg.ConnMaxBytes),
		Replicas: cfg.Replicas, Storage: jetstream.FileStorage, Duplicates: cfg.Duplicates.Duration,
		MaxMsgs: -1, MaxMsgsPerSubject: -1, MaxConsumers: -1,
	}, {
		Name:        AlertStream,
		Description: "tcpsentry alerts: tcpsentry.alert.<host> from sentries, tcpsentry.fleet.alert from analyzers",
		Subjects:    []string{alertPrefix + ">", FleetAlertSubject},
		Retention:   jetstream.LimitsPolicy, Discard: jetstream.DiscardOld,
		MaxAge: cfg.AlertMaxAge.Duration, MaxBytes: orUnlimited(cfg.AlertMaxBytes),
		Replicas: cfg.Replicas, Storage: jetstream.FileStorage, Duplicates: cfg.Duplicates.Duration,
		MaxMsgs: -1, MaxMsgsPerSubject: -1, MaxConsumers: -1,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("stream %s: %w", sc.Name, err)
		}
	}
	// Leases live for the bucket's TTL unless renewed (per-key TTLs need
	// nats-server 2.11; Debian has 2.9).
	if _, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: LeaseBucket, Description: "tcpsentry fleet partition leases and members",
		History: 1, TTL: cfg.LeaseTTL.Duration, Replicas: cfg.Replicas, Storage: jetstream.FileStorage,
	}); err != nil {
		return fmt.Errorf("bucket %s: %w", LeaseBucket, err)
	}
	return nil
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}
