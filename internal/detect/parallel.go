package detect

import (
	"cmp"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Parallel runs connection detectors in groups, each group on its own
// goroutine with its own Engine, all reading the same batches of records.
// Detectors keep no shared state, so splitting them is safe; it lets a
// long input use every core (the traffic detectors are memory-bound: one
// core spends ~2 µs a record on them). Records are copied into the
// batches, so callers may reuse theirs.
type Parallel struct {
	groups []*parallelGroup
	free   chan *parallelBatch
	cur    *parallelBatch
	onErr  func(error)
	errMu  sync.Mutex
}

type parallelGroup struct {
	e    *Engine
	ch   chan parallelMsg
	done chan struct{}
}

type parallelMsg struct {
	b      *parallelBatch
	source *string // non-nil: change the alerts' source from here on
}

type parallelBatch struct {
	conns []model.Conn
	left  atomic.Int32 // groups still reading it
}

const parallelBatchSize = 256

// detectorCost is each traffic detector's share of the time on typical
// records (from BenchmarkTrafficDetectors' profile); the groups are
// balanced on it. Unlisted detectors count 1.
var detectorCost = map[string]int{
	"exfiltration": 12, "beacon": 11, "scan": 8, "anomaly": 3, "long-connection": 2,
	"packet-size": 2, "suspicious-port": 1, "flood": 1,
}

// NewParallel splits detectors into at most workers groups of about equal
// cost. onErr receives the errors ObserveConn would have returned (a
// detector's panic); it is called from the groups' goroutines, one at a
// time.
func NewParallel(detectors []Detector, workers int, source string, log *slog.Logger, onErr func(error)) *Parallel {
	workers = max(1, min(workers, len(detectors)))
	sorted := slices.Clone(detectors)
	cost := func(d Detector) int { return cmp.Or(detectorCost[d.Name()], 1) }
	slices.SortStableFunc(sorted, func(a, b Detector) int { return cmp.Compare(cost(b), cost(a)) })
	sets := make([][]Detector, workers)
	load := make([]int, workers)
	for _, d := range sorted { // longest first onto the least loaded group
		i := 0
		for j := range load {
			if load[j] < load[i] {
				i = j
			}
		}
		sets[i] = append(sets[i], d)
		load[i] += cost(d)
	}
	p := &Parallel{free: make(chan *parallelBatch, 4*workers+4), onErr: onErr}
	if p.onErr == nil {
		p.onErr = func(error) {}
	}
	for _, set := range sets {
		// Keep each group's detectors in registry order, as Engine runs them.
		slices.SortStableFunc(set, func(a, b Detector) int {
			return cmp.Compare(slices.Index(detectors, a), slices.Index(detectors, b))
		})
		g := &parallelGroup{e: NewEngine(set, source, log), ch: make(chan parallelMsg, 4), done: make(chan struct{})}
		p.groups = append(p.groups, g)
		go p.run(g)
	}
	return p
}

func (p *Parallel) run(g *parallelGroup) {
	defer close(g.done)
	for m := range g.ch {
		if m.source != nil {
			g.e.SetSource(*m.source)
		}
		if m.b == nil {
			continue
		}
		for i := range m.b.conns {
			if errs := g.e.ObserveConn(&m.b.conns[i]); len(errs) > 0 {
				p.errMu.Lock()
				for _, err := range errs {
					p.onErr(err)
				}
				p.errMu.Unlock()
			}
		}
		if m.b.left.Add(-1) == 0 {
			m.b.conns = m.b.conns[:0]
			select {
			case p.free <- m.b:
			default:
			}
		}
	}
}

// ObserveConn queues a copy of c for every group.
func (p *Parallel) ObserveConn(c *model.Conn) {
	if p.cur == nil {
		select {
		case p.cur = <-p.free:
		default:
			p.cur = &parallelBatch{conns: make([]model.Conn, 0, parallelBatchSize)}
		}
	}
	p.cur.conns = append(p.cur.conns, *c)
	if len(p.cur.conns) == parallelBatchSize {
		p.send(parallelMsg{b: p.cur})
		p.cur = nil
	}
}

func (p *Parallel) send(m parallelMsg) {
	if m.b != nil {
		m.b.left.Store(int32(len(p.groups)))
	}
	for _, g := range p.groups {
		g.ch <- m
	}
}

// SetSource labels the alerts of the records queued from now on.
func (p *Parallel) SetSource(source string) {
	// The pending batch belongs to the old source: send it first.
	if p.cur != nil && len(p.cur.conns) > 0 {
		p.send(parallelMsg{b: p.cur})
		p.cur = nil
	}
	p.send(parallelMsg{source: &source})
}

// Flush processes everything queued, stops the goroutines and closes
// every detector's windows. The Parallel cannot be fed after it.
func (p *Parallel) Flush(now time.Time) {
	if p.cur != nil && len(p.cur.conns) > 0 {
		p.send(parallelMsg{b: p.cur})
	}
	p.cur = nil
	for _, g := range p.groups {
		close(g.ch)
	}
	var wg sync.WaitGroup
	for _, g := range p.groups {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-g.done
			g.e.Flush(now)
		}()
	}
	wg.Wait()
}

// Alerts returns every group's alerts in Engine's order: most severe
// first, then by first seen.
func (p *Parallel) Alerts() []alert.Alert {
	var out []alert.Alert
	for _, g := range p.groups {
		out = append(out, g.e.Alerts()...)
	}
	slices.SortStableFunc(out, func(a, b alert.Alert) int {
		return cmp.Or(cmp.Compare(b.Severity, a.Severity), a.FirstSeen.Compare(b.FirstSeen))
	})
	return out
}

// Notes collects the detectors' notes (after Flush).
func (p *Parallel) Notes() []string {
	var out []string
	for _, g := range p.groups {
		out = append(out, g.e.Notes()...)
	}
	return out
}

// Invalid counts alerts dropped as malformed, over all groups (after Flush).
func (p *Parallel) Invalid() int {
	n := 0
	for _, g := range p.groups {
		n += g.e.Invalid
	}
	return n
}
