package fleet

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/config"
	"github.com/tcpsentry/tcpsentry/internal/detect"
)

// AnalyzerOptions configures an Analyzer.
type AnalyzerOptions struct {
	Config *config.Config
	Deps   detect.Deps
	// Owner names this instance in leases; unique per running analyzer.
	Owner string
	// Commit receives the alerts of each flush (to the store's outbox);
	// called from several partition workers, never concurrently.
	Commit func(ctx context.Context, now time.Time, alerts []alert.Alert) error
	// Flush is how often (wall time) detector windows are closed and
	// alerts committed (default 250ms).
	Flush time.Duration
	// OnRecord, if set, sees every record message consumed (tests count
	// them against what the publishers had acknowledged).
	// src says which side consumed it: every record is consumed once on
	// the source side and once on the destination side.
	OnRecord func(msgID string, src, redelivered bool)
	Log      *slog.Logger
}

// AnalyzerStats counts an analyzer's work.
type AnalyzerStats struct {
	Records     atomic.Uint64 // record messages processed (source and destination sides)
	Redelivered atomic.Uint64 // of Records, messages delivered more than once
	Replayed    atomic.Uint64 // records replayed to rebuild a partition's state
	Bad         atomic.Uint64 // messages that did not decode (acknowledged and skipped)
	Claimed     atomic.Uint64 // partitions claimed, including takeovers
	Released    atomic.Uint64 // partitions released or lost
	Owned       atomic.Int64  // partitions owned now
}

// Analyzer is one `tcpsentry fleet` instance: it claims partitions and
// runs, for each, a source-side worker (traffic detectors and fleet-scan
// over every host's records of the partition's source addresses) and a
// destination-side worker (fleet-destination over the records of its
// destination addresses).
type Analyzer struct {
	o        AnalyzerOptions
	js       jetstream.JetStream
	cfg      config.Fleet
	log      *slog.Logger
	commitMu sync.Mutex
	Stats    AnalyzerStats
}

// NewAnalyzer returns an analyzer on nc; the streams must exist (Init).
func NewAnalyzer(nc *nats.Conn, o AnalyzerOptions) (*Analyzer, error) {
	if o.Owner == "" || o.Commit == nil || o.Config == nil {
		return nil, errors.New("fleet analyzer: owner, config and commit are required")
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	if o.Flush <= 0 {
		o.Flush = 250 * time.Millisecond
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Analyzer{o: o, js: js, cfg: o.Config.Fleet, log: o.Log.With("owner", o.Owner)}, nil
}

type worker struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Run claims, renews and works partitions until ctx ends, then releases
// them (after the workers acknowledged what they processed) so another
// instance can take over without waiting for the lease TTL.
func (a *Analyzer) Run(ctx context.Context) error {
	kv, err := a.js.KeyValue(ctx, LeaseBucket)
	if err != nil {
		return fmt.Errorf("lease bucket %s (run `tcpsentry fleet init`): %w", LeaseBucket, err)
	}
	l := &leases{kv: kv, owner: a.o.Owner, held: map[int]uint64{}}
	workers := map[int]*worker{}
	bg := context.WithoutCancel(ctx)
	var stopping sync.WaitGroup
	// stop ends a partition's workers without holding up renewals of the
	// others; with release, its lease is freed once they have stopped (and
	// acknowledged what they processed), so the next owner replays all of it.
	stop := func(p int, release bool) {
		w := workers[p]
		delete(workers, p)
		w.cancel()
		a.Stats.Released.Add(1)
		a.Stats.Owned.Store(int64(len(workers)))
		stopping.Go(func() {
			<-w.done
			if release {
				l.release(bg, p)
			}
		})
	}
	defer func() {
		for p := range workers {
			stop(p, true)
		}
		stopping.Wait()
		l.leave(bg)
	}()
	// Start the scan for free partitions at an owner-dependent offset, so
	// instances starting together do not all race for partition 0.
	h := fnv.New32a()
	h.Write([]byte(a.o.Owner))
	offset := int(h.Sum32() % uint32(a.cfg.Partitions))
	period := a.cfg.LeaseTTL.Duration / 3
	for {
		// Every broker request of a round is bounded by the renewal period,
		// so one slow answer cannot let the other leases lapse.
		rctx, cancel := context.WithTimeout(ctx, period)
		members, err := l.members(rctx)
		cancel()
		if err != nil {
			a.log.Warn("fleet membership", "err", err)
		}
		share := (a.cfg.Partitions + max(members, 1) - 1) / max(members, 1)
		if a.cfg.MaxPartitions > 0 {
			share = min(share, a.cfg.MaxPartitions)
		}
		for p := range workers {
			rctx, cancel := context.WithTimeout(ctx, period)
			err := l.renew(rctx, p)
			cancel()
			if err != nil {
				a.log.Warn("partition lost", "partition", p, "err", err)
				stop(p, false)
			}
		}
		// Hand back partitions beyond the fair share, so a new instance
		// gets work without anyone dying.
		for p := range workers {
			if len(workers) <= share {
				break
			}
			stop(p, true)
			a.log.Info("partition released for rebalancing", "partition", p)
		}
		for i := 0; i < a.cfg.Partitions && len(workers) < share && ctx.Err() == nil; i++ {
			p := (offset + i) % a.cfg.Partitions
			if workers[p] != nil {
				continue
			}
			cctx, cancel := context.WithTimeout(ctx, period)
			ok, err := l.claim(cctx, p)
			cancel()
			if err != nil {
				a.log.Warn("claim", "partition", p, "err", err)
				break
			}
			if !ok {
				continue
			}
			a.Stats.Claimed.Add(1)
			a.log.Info("partition claimed", "partition", p)
			wctx, cancel := context.WithCancel(ctx)
			w := &worker{cancel: cancel, done: make(chan struct{})}
			workers[p] = w
			a.Stats.Owned.Store(int64(len(workers)))
			go func() {
				defer close(w.done)
				var wg sync.WaitGroup
				var chain *chainDetector
				if a.o.Config.Fleet.Chain.Enabled {
					chain = newChainDetector(a.o.Config)
				}
				wg.Go(func() { a.work(wctx, p, true, chain) })
				wg.Go(func() { a.work(wctx, p, false, chain) })
				wg.Wait()
			}()
		}
		if !sleep(ctx, period) {
			return nil
		}
	}
}

// partitionDetectors is the state of one side of one partition.
type partitionDetectors struct {
	traffic   []detect.Detector // source side: the traffic detectors
	engine    *detect.Engine
	scan      *scanDetector        // source side
	dest      *destinationDetector // destination side
	chain     *chainDetector       // both sides of the partition share it
	clock     time.Time            // latest event time seen
	lastEvent time.Time            // wall time clock was last moved by a record
}

// work consumes one side of partition p with a durable pull consumer
// until ctx ends. Messages are acknowledged (AckAll, by the last of each
// each) only after the detectors have seen them, so a crash redelivers
// them to the next owner: records are processed at least once.
func (a *Analyzer) work(ctx context.Context, p int, src bool, chain *chainDetector) {
	name, filter := fmt.Sprintf("fleet-src-%d", p), srcFilter(p)
	if !src {
		name, filter = fmt.Sprintf("fleet-dst-%d", p), dstFilter(p)
	}
	log := a.log.With("consumer", name)
	var cons jetstream.Consumer
	for ctx.Err() == nil {
		var err error
		cons, err = a.js.CreateOrUpdateConsumer(ctx, ConnStream, jetstream.ConsumerConfig{
			Durable: name, FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy,
			AckWait: a.cfg.LeaseTTL.Duration, MaxAckPending: 4096, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err == nil {
			break
		}
		log.Warn("creating consumer", "err", err)
		if !sleep(ctx, time.Second) {
			return
		}
	}
	if cons == nil {
		return
	}
	st := &partitionDetectors{chain: chain}
	if src {
		st.traffic = detect.TrafficDetectors(a.o.Config, a.o.Deps)
		st.engine = detect.NewEngine(st.traffic, "fleet", a.log)
		if a.o.Config.Fleet.Scan.Enabled {
			st.scan = newScanDetector(a.o.Config)
		}
	} else if a.o.Config.Fleet.Destination.Enabled {
		st.dest = newDestinationDetector(a.o.Config)
	}
	agg := alert.NewLatestAggregator()
	emit := func(al alert.Alert) {
		if al.Source == "" {
			al.Source = "fleet"
		}
		agg.Add(al)
	}
	a.replay(ctx, cons, filter, st, src, emit, log)
	lastFlush := time.Now()
	flush := func(ctx context.Context) {
		now := st.clock
		if !st.lastEvent.IsZero() {
			// Event time moves on in silence too, so windows close.
			now = now.Add(time.Since(st.lastEvent))
		}
		if st.engine != nil && !now.IsZero() {
			st.engine.Flush(now)
			for _, al := range st.engine.Alerts() {
				agg.Add(al)
			}
			st.engine = detect.NewEngine(st.traffic, "fleet", a.log)
		}
		if st.scan != nil {
			st.scan.flush(st.clock, emit)
		}
		if st.dest != nil {
			st.dest.flush(st.clock, emit)
		}
		lastFlush = time.Now()
		if agg.Len() == 0 {
			return
		}
		alerts := agg.Alerts()
		agg = alert.NewLatestAggregator()
		a.commitMu.Lock()
		err := a.o.Commit(ctx, now, alerts)
		a.commitMu.Unlock()
		if err != nil {
			log.Error("committing fleet alerts", "err", err)
		}
	}
	defer flush(context.WithoutCancel(ctx))
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		batch, err := cons.Fetch(512, jetstream.FetchMaxWait(a.o.Flush))
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			log.Warn("fetch", "err", err)
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		var got []jetstream.Msg
		for m := range batch.Messages() {
			got = append(got, m)
			a.observe(m, src, st, emit, log)
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			log.Debug("fetch ended", "err", err)
		}
		if time.Since(lastFlush) >= a.o.Flush {
			flush(ctx)
		}
		// Each message is acknowledged on its own (not AckAll): a message
		// lost in transit during a reconnect must not be acknowledged by a
		// later one. Alerts flushed above are committed before; a crash in
		// between reprocesses the records and raises the same ids again.
		// The last acknowledgement waits for the server's confirmation, so
		// when this worker stops its acknowledgements are in, and the next
		// owner's replay reaches every record this one processed.
		for i, m := range got {
			var err error
			if i == len(got)-1 {
				actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				err = m.DoubleAck(actx)
				cancel()
			} else {
				err = m.Ack()
			}
			if err != nil {
				log.Warn("ack", "err", err)
				break
			}
		}
	}
}

// replay rebuilds the detectors' state when a partition changes owner: the
// records of the last fleet.replay (wall time in the stream) up to the
// durable consumer's ack floor — those the previous owner had processed —
// are fed to the detectors again through a temporary consumer. Alerts they
// raise again have the ids raised before. Records the previous owner
// acknowledged out of order above the floor are not replayed.
func (a *Analyzer) replay(ctx context.Context, cons jetstream.Consumer, filter string, st *partitionDetectors, src bool, emit detect.Emit, log *slog.Logger) {
	if a.cfg.Replay.Duration <= 0 {
		return
	}
	ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
	info, err := cons.Info(ictx)
	cancel()
	if err != nil {
		log.Warn("replay: consumer info", "err", err)
		return
	}
	floor := info.AckFloor.Stream
	log.Debug("replay", "ack_floor", floor, "delivered", info.Delivered.Stream, "ack_pending", info.NumAckPending)
	if floor == 0 {
		return
	}
	since := time.Now().Add(-a.cfg.Replay.Duration)
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	tmp, err := a.js.CreateConsumer(cctx, ConnStream, jetstream.ConsumerConfig{
		FilterSubject: filter, DeliverPolicy: jetstream.DeliverByStartTimePolicy, OptStartTime: &since,
		AckPolicy: jetstream.AckNonePolicy, InactiveThreshold: time.Minute, MemoryStorage: true, Replicas: 1,
	})
	cancel()
	if err != nil {
		log.Warn("replay: creating consumer", "err", err)
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		_ = a.js.DeleteConsumer(dctx, ConnStream, tmp.CachedInfo().Name)
		cancel()
	}()
	n := 0
	start := time.Now()
	for ctx.Err() == nil {
		batch, err := tmp.Fetch(1024, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			log.Warn("replay: fetch", "err", err)
			return
		}
		got, done := 0, false
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil || md.Sequence.Stream > floor {
				done = true
				continue
			}
			n++
			a.Stats.Replayed.Add(1)
			a.feed(m, src, st, emit, log)
			// The floor is one of this filter's messages: stop at it
			// rather than wait for an empty fetch.
			done = done || md.Sequence.Stream == floor
		}
		if done || got == 0 {
			break
		}
	}
	log.Info("partition state replayed", "records", n, "up_to_seq", floor, "took", time.Since(start).Round(time.Millisecond))
}

func (a *Analyzer) observe(m jetstream.Msg, src bool, st *partitionDetectors, emit detect.Emit, log *slog.Logger) {
	a.Stats.Records.Add(1)
	redelivered := false
	if md, err := m.Metadata(); err == nil && md.NumDelivered > 1 {
		redelivered = true
		a.Stats.Redelivered.Add(1)
	}
	if a.o.OnRecord != nil {
		a.o.OnRecord(m.Headers().Get(jetstream.MsgIDHeader), src, redelivered)
	}
	a.feed(m, src, st, emit, log)
}

// feed decodes one record message and runs the detectors on it.
func (a *Analyzer) feed(m jetstream.Msg, src bool, st *partitionDetectors, emit detect.Emit, log *slog.Logger) {
	nm := &nats.Msg{Subject: m.Subject(), Data: m.Data(), Header: m.Headers()}
	c, host, err := Decode(nm)
	if err != nil {
		a.Stats.Bad.Add(1)
		log.Warn("bad record skipped", "subject", m.Subject(), "err", err)
		return
	}
	if t := c.LastSeen(); t.After(st.clock) {
		st.clock = t
	}
	st.lastEvent = time.Now()
	if st.engine != nil {
		for _, err := range st.engine.ObserveConn(c) {
			log.Error("traffic detector failed", "err", err)
		}
	}
	if st.scan != nil {
		st.scan.observe(c, host, emit)
	}
	if st.dest != nil {
		st.dest.observe(c, host, emit)
	}
	if st.chain != nil {
		st.chain.observe(c, host, src, emit)
	}
}
