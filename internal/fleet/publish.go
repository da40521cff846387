package fleet

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/zeeklog"
)

// PublishStats counts a ConnPublisher's records.
type PublishStats struct {
	Spooled   atomic.Uint64 // written to the spool
	Published atomic.Uint64 // handed to JetStream (republications included)
	Acked     atomic.Uint64 // stored by the stream
	Retried   atomic.Uint64 // republished after a missing or failed acknowledgement
	Dropped   atomic.Uint64 // not spooled: queue or spool full, or a write error
}

// ConnPublisher publishes connection records through a Spool: each record
// is written to disk first, then published asynchronously with a
// Nats-Msg-Id that is the same when it is republished (JetStream stores it
// once within its dedup window), with an adaptive window of publications
// awaiting their acknowledgement (at most Window). Acknowledgements are
// taken in order; a failed or timed-out one halves the window and, after a
// backoff, republishes what failed — for however long the broker is away.
// The guarantee is at least once for every record that reached the spool:
// across broker outages as long as the spool's size covers, and across a
// crash of the sentry. Records are dropped (and counted) only when the
// spool is full or cannot be written. Alerts go through the store's outbox
// and AlertSink instead.
type ConnPublisher struct {
	nc         *nats.Conn
	js         jetstream.JetStream
	host       string
	partitions int
	window     int
	spool      *Spool
	syncEvery  time.Duration
	log        *slog.Logger
	Stats      PublishStats
}

// PublisherOptions configures NewConnPublisher.
type PublisherOptions struct {
	Host       string        // sentry name (any string; made a subject token)
	Partitions int           // fleet.partitions
	Window     int           // publications awaiting acknowledgement at once (fleet.publish_buffer)
	Spool      *Spool        // where records wait for their acknowledgement; closed by Run
	Sync       time.Duration // how often the spool is forced to disk (default 1s)
	Log        *slog.Logger
}

// publishTimeout is how long a publication waits for its acknowledgement
// before it counts as failed: long enough for a replicated stream on a
// loaded cluster, short enough to notice a message lost in a reconnect.
const publishTimeout = 10 * time.Second

// NewConnPublisher returns a publisher on nc; run it with Run.
func NewConnPublisher(nc *nats.Conn, o PublisherOptions) (*ConnPublisher, error) {
	if o.Partitions < 1 || o.Window < 1 || o.Spool == nil {
		return nil, fmt.Errorf("fleet publisher: partitions %d and window %d must be positive, and a spool is needed", o.Partitions, o.Window)
	}
	// Publications abandoned after a failure still count against the
	// client's pending limit until they time out: leave room for a window
	// of them.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(2*o.Window),
		jetstream.WithPublishAsyncTimeout(publishTimeout))
	if err != nil {
		return nil, err
	}
	if o.Sync <= 0 {
		o.Sync = time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &ConnPublisher{nc: nc, js: js, host: HostToken(o.Host), partitions: o.Partitions, window: o.Window,
		spool: o.Spool, syncEvery: o.Sync, log: o.Log}, nil
}

// Backlog is the number of spooled records the stream has not acknowledged.
func (p *ConnPublisher) Backlog() uint64 { return p.spool.Backlog() }

// SpoolBytes is the size of the spool on disk.
func (p *ConnPublisher) SpoolBytes() int64 { return p.spool.Bytes() }

// Encode returns the message of one record: Zeek JSON, the Update flag in
// a header, and a Nats-Msg-Id from the host, the uid and the content (an
// in-progress record and the final one share a uid but not a content).
func Encode(c *model.Conn, host string, partitions int) *nats.Msg {
	body := zeeklog.AppendJSON(nil, c)
	sum := sha256.Sum256(body)
	m := nats.NewMsg(ConnSubject(Partition(c.Orig.Addr(), partitions), Partition(c.Resp.Addr(), partitions), host))
	m.Data = body
	m.Header.Set(jetstream.MsgIDHeader, host+"/"+c.UID+"/"+hex.EncodeToString(sum[:8]))
	if c.Update {
		m.Header.Set(HeaderUpdate, "1")
	}
	return m
}

// Decode reads a record message back; the host is the subject's last token.
func Decode(m *nats.Msg) (*model.Conn, string, error) {
	c, err := zeeklog.ParseJSON(m.Data, m.Subject)
	if err != nil {
		return nil, "", err
	}
	c.Update = m.Header.Get(HeaderUpdate) == "1"
	return c, hostOf(m.Subject), nil
}

// Run spools the records from in and publishes them until ctx ends or in
// is closed; then it waits up to grace for the backlog to be acknowledged,
// and closes the spool, which keeps the rest for the next start.
func (p *ConnPublisher) Run(ctx context.Context, in <-chan *model.Conn, grace time.Duration) error {
	sendCtx, stopSend := context.WithCancel(context.WithoutCancel(ctx))
	defer stopSend()
	sent := make(chan error, 1)
	go func() { sent <- p.send(sendCtx) }()
	syncTick := time.NewTicker(p.syncEvery)
	defer syncTick.Stop()
	var werr error
	spoolOne := func(c *model.Conn) {
		if err := p.spool.Append(Encode(c, p.host, p.partitions)); err != nil {
			p.drop(err)
			return
		}
		p.Stats.Spooled.Add(1)
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case c, ok := <-in:
			if !ok {
				break loop
			}
			spoolOne(c)
			// Group commit: take what is queued, then one flush.
			closed := false
		drain:
			for range 4096 {
				select {
				case c, ok := <-in:
					if !ok {
						closed = true
						break drain
					}
					spoolOne(c)
				default:
					break drain
				}
			}
			if err := p.spool.Flush(); err != nil {
				p.log.Error("spool flush", "err", err)
			}
			if closed {
				break loop
			}
		case <-syncTick.C:
			if err := p.spool.Sync(); err != nil {
				p.log.Error("spool sync", "err", err)
			}
		case err := <-sent:
			werr = err
			stopSend()
			break loop
		}
	}
	if err := p.spool.Sync(); err != nil {
		p.log.Error("spool sync", "err", err)
	}
	if werr == nil {
		deadline := time.Now().Add(grace)
		for p.spool.Backlog() > 0 && time.Now().Before(deadline) {
			select {
			case werr = <-sent:
				deadline = time.Now()
			case <-time.After(10 * time.Millisecond):
			}
		}
		stopSend()
		if werr == nil {
			werr = <-sent
		}
	}
	if left := p.spool.Backlog(); left > 0 {
		p.log.Warn("records not yet acknowledged stay in the spool for the next start", "records", left)
	}
	if err := p.spool.Close(); err != nil && werr == nil {
		werr = err
	}
	return werr
}

// drop counts a record that could not be spooled, logging at powers of two.
func (p *ConnPublisher) drop(err error) {
	n := p.Stats.Dropped.Add(1)
	if n&(n-1) == 0 {
		p.log.Warn("records dropped: not spooled", "dropped", n, "err", err)
	}
}

// inflight is a record published and awaiting its acknowledgement.
type inflight struct {
	seq uint64
	msg *nats.Msg
	fut jetstream.PubAckFuture
	ok  bool // acknowledged while not at the head of the window
}

// minWindow is the smallest in-flight window the publisher shrinks to.
const minWindow = 64

// send reads the spool forward, keeps a window of publications in flight,
// and advances the spool's acknowledged position in order. The window
// adapts: it halves when an acknowledgement fails (a broker that cannot
// acknowledge the window within the publish timeout is overloaded, and
// republishing more only makes it slower) and grows by one with each
// acknowledgement, up to p.window. A failure republishes, after a backoff
// and once connected, the head and every publication whose future has
// already failed; the stream's dedup drops what had arrived. It returns on
// ctx's end, or with an error when the spool cannot be read.
func (p *ConnPublisher) send(ctx context.Context) error {
	const minBackoff, maxBackoff = 250 * time.Millisecond, 5 * time.Second
	r := p.spool.Reader()
	defer r.Close()
	ring := make([]inflight, p.window)
	head, n := 0, 0
	window := p.window
	backoff := time.Duration(0)
	save := time.NewTicker(time.Second)
	defer save.Stop()
	defer func() {
		if err := p.spool.SaveCursor(); err != nil {
			p.log.Error("spool cursor", "err", err)
		}
	}()
	advance := func() {
		h := &ring[head]
		p.Stats.Acked.Add(1)
		p.spool.Ack(h.seq + 1)
		*h = inflight{}
		head, n = (head+1)%p.window, n-1
		window = min(window+1, p.window)
		backoff = 0
	}
	for {
		for n < window {
			m, seq, ok, err := r.Next()
			if err != nil {
				p.log.Error("spool unreadable: publishing stops", "err", err)
				return err
			}
			if !ok {
				break
			}
			ring[(head+n)%p.window] = inflight{seq: seq, msg: m, fut: p.publish(m)}
			n++
		}
		if n == 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-p.spool.Notify():
			case <-save.C:
				if err := p.spool.SaveCursor(); err != nil {
					p.log.Error("spool cursor", "err", err)
				}
			}
			continue
		}
		h := &ring[head]
		if h.ok {
			advance()
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-h.fut.Ok():
			advance()
		case err := <-h.fut.Err():
			window = max(window/2, minWindow)
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			if backoff == minBackoff || backoff == maxBackoff {
				p.log.Warn("records not acknowledged; republishing", "in_flight", n, "window", window,
					"backlog", p.spool.Backlog(), "retry_in", backoff, "err", err)
			}
			if !sleep(ctx, backoff) {
				return nil
			}
			// While disconnected, publications would only pile up in the
			// client's reconnect buffer: wait for the connection.
			for p.nc.Status() != nats.CONNECTED {
				if !sleep(ctx, minBackoff) {
					return nil
				}
			}
			h.fut = p.publish(h.msg)
			p.Stats.Retried.Add(1)
			for i := 1; i < n; i++ {
				f := &ring[(head+i)%p.window]
				if f.ok {
					continue
				}
				select {
				case <-f.fut.Ok():
					f.ok = true
				case <-f.fut.Err():
					f.fut = p.publish(f.msg)
					p.Stats.Retried.Add(1)
				default: // still waiting: leave it
				}
			}
		case <-save.C:
			if err := p.spool.SaveCursor(); err != nil {
				p.log.Error("spool cursor", "err", err)
			}
		}
	}
}

// publish hands m to JetStream; an immediate failure becomes a failed future.
func (p *ConnPublisher) publish(m *nats.Msg) jetstream.PubAckFuture {
	p.Stats.Published.Add(1)
	fut, err := p.js.PublishMsgAsync(m, jetstream.WithMsgID(m.Header.Get(jetstream.MsgIDHeader)))
	if err != nil {
		return failed(err)
	}
	return fut
}

// failed is a PubAckFuture that has already failed with err.
func failed(err error) jetstream.PubAckFuture {
	ch := make(chan error, 1)
	ch <- err
	return failedFuture{err: ch}
}

type failedFuture struct{ err chan error }

func (f failedFuture) Ok() <-chan *jetstream.PubAck { return nil }
func (f failedFuture) Err() <-chan error            { return f.err }
func (f failedFuture) Msg() *nats.Msg               { return nil }

// AlertSink publishes alerts to a subject as a sink.Sink, so that the
// store's outbox retries them across broker outages. The Nats-Msg-Id is
// the subject, the alert id and the severity: a redelivery, or the same
// finding raised again by another analyzer after a failover, is stored
// once within the dedup window, while a rise in severity passes. The
// subject is part of it because JetStream dedupes per stream, not per
// subject, and a sentry's traffic finding and the fleet's finding of the
// same traffic share an id (a hash of detector and entity): without it
// one of the two publications would be dropped.
type AlertSink struct {
	js      jetstream.JetStream
	subject string
}

// NewAlertSink publishes to subject (AlertSubject(host) or FleetAlertSubject).
func NewAlertSink(nc *nats.Conn, subject string) (*AlertSink, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return &AlertSink{js: js, subject: subject}, nil
}

// Name implements sink.Sink.
func (s *AlertSink) Name() string { return "nats" }

// Send publishes a and waits for the stream's acknowledgement.
func (s *AlertSink) Send(ctx context.Context, a alert.Alert) error {
	body, err := json.Marshal(a)
	if err != nil {
		return err
	}
	m := nats.NewMsg(s.subject)
	m.Data = body
	_, err = s.js.PublishMsg(ctx, m, jetstream.WithMsgID(AlertMsgID(s.subject, a)))
	if err != nil {
		return fmt.Errorf("nats %s: %w", s.subject, err)
	}
	return nil
}

// AlertMsgID is the Nats-Msg-Id of alert a published on subject.
func AlertMsgID(subject string, a alert.Alert) string {
	return subject + "/" + a.ID + "/" + a.Severity.String()
}

// Close implements sink.Sink; the connection belongs to the caller.
func (s *AlertSink) Close() error { return nil }
