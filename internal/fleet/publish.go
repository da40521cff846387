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
	Published atomic.Uint64 // handed to JetStream
	Acked     atomic.Uint64 // stored by the stream (each record once)
	Retried   atomic.Uint64 // republished after a missing or failed acknowledgement
	Dropped   atomic.Uint64 // given up: buffer full or retries exhausted
}

// ConnPublisher publishes connection records, asynchronously, each with a
// Nats-Msg-Id that is the same when it is republished, so JetStream stores
// it once. Records wait for their acknowledgement in a bounded buffer and
// are republished until acknowledged or until Retry has passed; what does
// not fit, or is still unacknowledged then, is dropped and counted. The
// guarantee is therefore at least once (exactly once in the stream, thanks
// to the dedup window) for outages shorter than Retry that the buffer
// absorbs, and counted loss beyond that. Alerts, which must not be lost,
// go through the store's outbox and AlertSink instead.
type ConnPublisher struct {
	js         jetstream.JetStream
	host       string
	partitions int
	retry      time.Duration
	pending    chan pending
	log        *slog.Logger
	Stats      PublishStats
}

type pending struct {
	msg   *nats.Msg
	id    string
	fut   jetstream.PubAckFuture
	first time.Time
}

// PublisherOptions configures NewConnPublisher.
type PublisherOptions struct {
	Host       string        // sentry name (any string; made a subject token)
	Partitions int           // fleet.partitions
	Buffer     int           // records awaiting acknowledgement (fleet.publish_buffer)
	Retry      time.Duration // how long an unacknowledged record is retried (default 2m)
	Log        *slog.Logger
}

// NewConnPublisher returns a publisher on nc; run it with Run.
func NewConnPublisher(nc *nats.Conn, o PublisherOptions) (*ConnPublisher, error) {
	if o.Partitions < 1 || o.Buffer < 1 {
		return nil, fmt.Errorf("fleet publisher: partitions %d and buffer %d must be positive", o.Partitions, o.Buffer)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(o.Buffer),
		jetstream.WithPublishAsyncTimeout(5*time.Second))
	if err != nil {
		return nil, err
	}
	if o.Retry <= 0 {
		o.Retry = 2 * time.Minute
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &ConnPublisher{js: js, host: HostToken(o.Host), partitions: o.Partitions, retry: o.Retry,
		pending: make(chan pending, o.Buffer), log: o.Log}, nil
}

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

// Run publishes the records from in until ctx ends or in is closed, then
// waits up to grace for outstanding acknowledgements.
func (p *ConnPublisher) Run(ctx context.Context, in <-chan *model.Conn, grace time.Duration) error {
	acks := make(chan struct{})
	ackCtx, stopAcks := context.WithCancel(context.WithoutCancel(ctx))
	go func() { defer close(acks); p.confirm(ackCtx) }()
	defer func() {
		close(p.pending)
		t := time.AfterFunc(grace, stopAcks)
		<-acks
		t.Stop()
		stopAcks()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case c, ok := <-in:
			if !ok {
				return nil
			}
			m := Encode(c, p.host, p.partitions)
			p.publish(ctx, pending{msg: m, id: m.Header.Get(jetstream.MsgIDHeader), first: time.Now()})
		}
	}
}

// publish hands one message to JetStream and queues it for confirm; when
// the buffer is full the record is dropped rather than stall the caller.
func (p *ConnPublisher) publish(ctx context.Context, pm pending) {
	fut, err := p.js.PublishMsgAsync(pm.msg, jetstream.WithMsgID(pm.id))
	if err != nil {
		p.Stats.Dropped.Add(1)
		if p.Stats.Dropped.Load()&(p.Stats.Dropped.Load()-1) == 0 { // log at powers of two
			p.log.Warn("records dropped: NATS publish buffer full", "dropped", p.Stats.Dropped.Load(), "err", err)
		}
		return
	}
	p.Stats.Published.Add(1)
	pm.fut = fut
	select {
	case p.pending <- pm:
	case <-ctx.Done():
	}
}

// confirm waits for each record's acknowledgement in publish order and
// republishes those that failed or timed out, until retry has passed. A
// record is retried at most every retryGap, but a backlog whose futures
// failed long ago is republished without waiting, so recovery after an
// outage takes round trips, not sleeps.
func (p *ConnPublisher) confirm(ctx context.Context) {
	const retryGap = 250 * time.Millisecond
	for pm := range p.pending {
		last := pm.first
		for {
			var err error
			select {
			case <-pm.fut.Ok():
			case err = <-pm.fut.Err():
			case <-ctx.Done():
				err = ctx.Err()
			}
			if err == nil {
				p.Stats.Acked.Add(1)
				break
			}
			if ctx.Err() != nil || time.Since(pm.first) > p.retry {
				p.Stats.Dropped.Add(1)
				p.log.Warn("record dropped: not acknowledged", "msg_id", pm.id, "err", err)
				break
			}
			if wait := retryGap - time.Since(last); wait > 0 && !sleep(ctx, wait) {
				continue
			}
			last = time.Now()
			p.Stats.Retried.Add(1)
			fut, perr := p.js.PublishMsgAsync(pm.msg, jetstream.WithMsgID(pm.id))
			if perr != nil {
				fut = failed(perr)
			}
			pm.fut = fut
		}
	}
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
// store's outbox retries them across broker outages. The Nats-Msg-Id is the
// alert id and severity: a redelivery, or the same finding raised again by
// another analyzer after a failover, is stored once within the dedup
// window, while a rise in severity passes.
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
	_, err = s.js.PublishMsg(ctx, m, jetstream.WithMsgID(a.ID+"/"+a.Severity.String()))
	if err != nil {
		return fmt.Errorf("nats %s: %w", s.subject, err)
	}
	return nil
}

// Close implements sink.Sink; the connection belongs to the caller.
func (s *AlertSink) Close() error { return nil }
