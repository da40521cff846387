package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tcpsentry/tcpsentry/internal/fleet"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/sink"
)

// publisher is watch's link to the fleet: records to TCPSENTRY_CONN through
// a bounded, non-blocking queue (local detection never waits for the
// broker) into the on-disk spool, alerts to tcpsentry.alert.<host> as one
// more outbox sink.
type publisher struct {
	nc    *nats.Conn
	conns *fleet.ConnPublisher
	queue chan *model.Conn
	host  string
	stop  context.CancelFunc
	done  sync.WaitGroup
	// stopped is set when the publisher ended on its own (an unreadable
	// spool); congested when a record last waited for room in vain. Only
	// the watch loop calls record, so congested needs no lock.
	stopped   atomic.Bool
	congested bool
	log       *slog.Logger
}

// startPublish connects when fleet.urls (or --publish) is set and opens
// the spool (fleet.spool, else storePath + ".spool"); nil, nil when
// publishing is off.
func (w *watcher) startPublish(storePath string) (*publisher, error) {
	fc := w.cfg.Fleet
	if len(w.publishURLs) > 0 {
		fc.URLs = w.publishURLs
	}
	if len(fc.URLs) == 0 {
		return nil, nil
	}
	host := fc.Host
	if host == "" {
		host, _ = os.Hostname()
	}
	cfg := *w.cfg
	cfg.Fleet = fc
	nc, err := fleet.Connect(connectOptions(&cfg, "tcpsentry-watch-"+host, w.log))
	if err != nil {
		return nil, err
	}
	dir := fc.Spool
	if dir == "" {
		dir = storePath + ".spool"
	}
	spool, err := fleet.OpenSpool(dir, fc.SpoolMaxBytes)
	if err != nil {
		nc.Close()
		return nil, err
	}
	if n := spool.Backlog(); n > 0 {
		w.log.Info("publishing records spooled before this start", "spool", dir, "records", n)
	}
	cp, err := fleet.NewConnPublisher(nc, fleet.PublisherOptions{Host: host, Partitions: fc.Partitions,
		Window: fc.PublishBuffer, Spool: spool, Sync: fc.SpoolSync.Duration, Log: w.log})
	if err != nil {
		spool.Close()
		nc.Close()
		return nil, err
	}
	registerPublisherMetrics(w.metrics, cp)
	p := &publisher{nc: nc, conns: cp, queue: make(chan *model.Conn, fc.PublishBuffer), host: fleet.HostToken(host), log: w.log}
	ctx, cancel := context.WithCancel(context.Background())
	p.stop = cancel
	p.done.Go(func() {
		if err := cp.Run(ctx, p.queue, w.cfg.Watch.Grace.Duration); err != nil {
			p.stopped.Store(true)
			w.log.Error("fleet publisher stopped; records are no longer published", "err", err)
		}
	})
	w.log.Info("publishing to NATS JetStream", "servers", fmt.Sprint(fc.URLs), "host", p.host, "partitions", fc.Partitions, "spool", dir)
	return p, nil
}

// record queues c for the spool. A full queue (the spool's disk cannot
// keep up) holds the caller up to queueWait, so that a replayed file is
// slowed rather than thinned, and then drops c (counted) so that live
// detection does not stall.
func (p *publisher) record(c *model.Conn) {
	if p == nil {
		return
	}
	select {
	case p.queue <- c:
		p.congested = false
		return
	default:
	}
	// Once a wait has failed, or with the publisher gone, drop at once
	// until the queue takes records again: one stall, not one per record.
	if p.congested || p.stopped.Load() {
		p.conns.Stats.Dropped.Add(1)
		return
	}
	t := time.NewTimer(queueWait)
	defer t.Stop()
	select {
	case p.queue <- c:
	case <-t.C:
		p.congested = true
		n := p.conns.Stats.Dropped.Add(1)
		if p.log != nil {
			p.log.Warn("records dropped: the fleet spool does not keep up", "dropped_total", n)
		}
	}
}

// queueWait is how long a record waits for room in front of the spool.
const queueWait = 250 * time.Millisecond

// withSink adds the sink publishing this host's alerts (through the outbox,
// so a broker outage delays them but loses none).
func (p *publisher) withSink(sinks []sink.Sink) []sink.Sink {
	if p == nil {
		return sinks
	}
	s, err := fleet.NewAlertSink(p.nc, fleet.AlertSubject(p.host))
	if err != nil {
		return sinks
	}
	return append(sinks, s)
}

// close spools what is queued and waits up to grace for the
// acknowledgements (the rest stays in the spool); call it after the last
// record.
func (p *publisher) close(grace time.Duration) {
	if p == nil {
		return
	}
	close(p.queue)
	t := time.AfterFunc(grace, p.stop)
	p.done.Wait()
	t.Stop()
	p.stop()
	_ = p.nc.FlushTimeout(grace)
	p.nc.Close()
}
