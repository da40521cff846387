package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/metrics"
	"github.com/tcpsentry/tcpsentry/internal/store"
)

// Outbox is the part of the store the dispatcher drains.
type Outbox interface {
	Pending(ctx context.Context, sink string, limit int) ([]store.OutboxItem, error)
	Ack(ctx context.Context, seq int64) error
	Failed(ctx context.Context, seq int64, cause error) error
	OutboxDepth(ctx context.Context) (map[string]int, error)
}

// DispatchOptions tunes a Dispatcher; zero values take the defaults noted.
type DispatchOptions struct {
	Timeout    time.Duration // one delivery attempt (15s)
	MinBackoff time.Duration // first wait after a failure (1s)
	MaxBackoff time.Duration // longest wait between attempts (5m)
	Poll       time.Duration // idle re-check when no Wake came (5s)
	Log        *slog.Logger
	Metrics    *metrics.Metrics // optional
}

// Dispatcher drains the outbox into the sinks: one goroutine per sink, each
// with its own backoff, so a sink that is down or hangs delays only its own
// rows. A row is acknowledged (deleted) only after its sink accepted it;
// delivery is therefore at least once, and a receiver dedupes on the
// alert's stable id.
type Dispatcher struct {
	out   Outbox
	sinks []Sink
	opts  DispatchOptions
	wake  []chan struct{}
	// busy holds a token per sink while a Send runs, so that a sink that
	// ignores its context (a blocked stdout) is not stacked up with more.
	busy []chan struct{}
}

// NewDispatcher returns a dispatcher over sinks; it sends nothing until Run
// or Drain.
func NewDispatcher(out Outbox, sinks []Sink, opts DispatchOptions) *Dispatcher {
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = time.Second
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(5*time.Minute, opts.MinBackoff)
	}
	if opts.Poll <= 0 {
		opts.Poll = 5 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	d := &Dispatcher{out: out, sinks: sinks, opts: opts}
	for range sinks {
		d.wake = append(d.wake, make(chan struct{}, 1))
		d.busy = append(d.busy, make(chan struct{}, 1))
	}
	return d
}

// Names returns the sink names, the keys of their outbox rows.
func (d *Dispatcher) Names() []string {
	n := make([]string, len(d.sinks))
	for i, s := range d.sinks {
		n[i] = s.Name()
	}
	return n
}

// Wake tells every idle sink loop that new rows were queued. A sink that is
// backing off after a failure keeps waiting.
func (d *Dispatcher) Wake() {
	for _, c := range d.wake {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

// Run delivers until ctx ends.
func (d *Dispatcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i, s := range d.sinks {
		wg.Go(func() { d.loop(ctx, i, s) })
	}
	wg.Wait()
}

func (d *Dispatcher) loop(ctx context.Context, i int, s Sink) {
	var backoff time.Duration
	for {
		err := d.drain(ctx, i)
		if ctx.Err() != nil {
			return
		}
		wait := d.opts.Poll
		if err != nil {
			if backoff == 0 {
				backoff = d.opts.MinBackoff
			} else {
				backoff = min(backoff*2, d.opts.MaxBackoff)
			}
			// Jitter in [backoff/2, backoff).
			wait = backoff/2 + rand.N(backoff/2+1)
			d.opts.Log.Warn("sink delivery failed; alert kept in the outbox", "sink", s.Name(), "retry_in", wait.Round(time.Millisecond), "err", err)
		} else {
			backoff = 0
		}
		t := time.NewTimer(wait)
		if backoff > 0 {
			select {
			case <-ctx.Done():
			case <-t.C:
			}
		} else {
			select {
			case <-ctx.Done():
			case <-t.C:
			case <-d.wake[i]:
			}
		}
		t.Stop()
		if ctx.Err() != nil {
			return
		}
	}
}

// Drain makes one pass for every sink at once, stopping a sink at its
// first failure, until the outbox is empty or ctx ends; for shutdown and
// --once. It returns the failures, one per sink.
func (d *Dispatcher) Drain(ctx context.Context) error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for i := range d.sinks {
		wg.Go(func() {
			if err := d.drain(ctx, i); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// drainBatch bounds the rows read at once.
const drainBatch = 64

// drain delivers sink i's rows oldest first until none is left or one fails.
func (d *Dispatcher) drain(ctx context.Context, i int) error {
	s := d.sinks[i]
	defer d.updateDepth(s.Name())
	for {
		items, err := d.out.Pending(ctx, s.Name(), drainBatch)
		if err != nil || len(items) == 0 {
			return err
		}
		for _, it := range items {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if it.Err != nil {
				// Never deliverable; keeping it would block the sink forever.
				d.opts.Log.Error("dropping unreadable outbox row", "sink", s.Name(), "seq", it.Seq, "err", it.Err)
				if err := d.out.Ack(ctx, it.Seq); err != nil {
					return err
				}
				continue
			}
			err := d.send(ctx, i, it.Alert)
			if err != nil {
				if m := d.opts.Metrics; m != nil {
					m.SinkFailures.WithLabelValues(s.Name()).Inc()
				}
				// Record the attempt even when ctx ended (use a fresh,
				// short context: the row must say why it is still there).
				fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
				ferr := d.out.Failed(fctx, it.Seq, err)
				fcancel()
				return errors.Join(err, ferr)
			}
			if m := d.opts.Metrics; m != nil {
				m.SinkDelivered.WithLabelValues(s.Name()).Inc()
			}
			d.opts.Log.Debug("alert delivered", "sink", s.Name(), "id", it.Alert.ID, "attempts", it.Attempts+1)
			if err := d.out.Ack(context.WithoutCancel(ctx), it.Seq); err != nil {
				// Delivered but still queued: it will be sent again (at
				// least once), which the stable id lets a receiver absorb.
				return err
			}
		}
	}
}

// send runs one Send under the per-sink timeout. Sinks honour their
// context, but one that does not (a write to a stdout nobody reads) must
// not stall shutdown or reload: send returns at the timeout and leaves at
// most one such Send behind per sink.
func (d *Dispatcher) send(ctx context.Context, i int, a alert.Alert) error {
	s := d.sinks[i]
	select {
	case d.busy[i] <- struct{}{}:
	default:
		return fmt.Errorf("sink %s: a previous send is still blocked", s.Name())
	}
	sctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		err := s.Send(sctx, a)
		<-d.busy[i] // free before answering, so the next send finds it free
		res <- err
	}()
	select {
	case err := <-res:
		return err
	case <-sctx.Done():
		// Give a sink that does honour the context its own error.
		select {
		case err := <-res:
			return err
		case <-time.After(100 * time.Millisecond):
		}
		return fmt.Errorf("sink %s: alert %s: %w (send still blocked)", s.Name(), a.ID, sctx.Err())
	}
}

func (d *Dispatcher) updateDepth(name string) {
	m := d.opts.Metrics
	if m == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	depth, err := d.out.OutboxDepth(ctx)
	if err != nil {
		return
	}
	m.OutboxDepth.WithLabelValues(name).Set(float64(depth[name]))
}
