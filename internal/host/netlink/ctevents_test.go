package netlink

import (
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

func ctMsg(msg uint16, flags uint16, payload []byte) []byte {
	return nlMsg(unix.NFNL_SUBSYS_CTNETLINK<<8|msg, flags, 0, 0, payload)
}

func TestParseEvents(t *testing.T) {
	destroyed := fullFlow
	var dgram []byte
	dgram = append(dgram, ctMsg(0, unix.NLM_F_CREATE|unix.NLM_F_EXCL, encodeConntrack(fullFlow))...)
	dgram = append(dgram, ctMsg(0, 0, encodeConntrack(fullFlow))...)
	dgram = append(dgram, ctMsg(2, 0, []byte{unix.AF_INET, 0, 0, 0})...) // no tuples: malformed
	dgram = append(dgram, nlMsg(unix.NFNL_SUBSYS_CTNETLINK_EXP<<8, 0, 0, 0, []byte{1, 2, 3, 4})...)
	dgram = append(dgram, ctMsg(2, 0, encodeConntrack(destroyed))...)
	var got []Event
	var bad []error
	err := parseEvents(dgram, func(e Event) { got = append(got, e) }, func(err error) { bad = append(bad, err) })
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0].Type != EventNew || got[1].Type != EventUpdate || got[2].Type != EventDestroy || got[2].Flow != destroyed {
		t.Errorf("events %+v", got)
	}
	if len(bad) != 1 || !strings.Contains(bad[0].Error(), "destroy event at offset") || !strings.Contains(bad[0].Error(), "no CTA_TUPLE_ORIG") {
		t.Errorf("malformed: %v", bad)
	}
	// A framing error stops the walk and is returned, after the good ones.
	n := 0
	err = parseEvents(append(ctMsg(2, 0, encodeConntrack(destroyed)), 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17), func(Event) { n++ }, func(error) {})
	if err == nil || n != 1 {
		t.Errorf("framing error: %v after %d events", err, n)
	}
}

func FuzzParseEvents(f *testing.F) {
	f.Add(ctMsg(2, 0, encodeConntrack(fullFlow)))
	f.Add(ctMsg(0, unix.NLM_F_CREATE, encodeConntrack(fullFlow)))
	for _, p := range readFixture(f, "conntrack.nl") {
		f.Add(ctMsg(2, 0, p))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = parseEvents(b, func(e Event) {
			if e.Type < EventNew || e.Type > EventDestroy {
				t.Fatalf("event type %d", e.Type)
			}
			c := EventConn(e)
			if c.Proto != e.Flow.Proto || c.Orig != e.Flow.Orig.Src {
				t.Fatalf("conn %+v from %+v", c, e.Flow)
			}
		}, func(error) {})
	})
}

func TestEventConn(t *testing.T) {
	start := time.Unix(1764000000, 0)
	tcp := func(state uint8, status uint32) Flow {
		return Flow{Proto: model.ProtoTCP, Orig: Tuple{ap("10.0.0.1:40000"), ap("10.0.0.2:22")}, Reply: Tuple{ap("10.0.0.2:22"), ap("10.0.0.1:40000")},
			TCPState: state, Status: status, ID: 7, Start: start, Stop: start.Add(1500 * time.Millisecond),
			OrigPackets: 6, OrigBytes: 400, ReplyPackets: 5, ReplyBytes: 900}
	}
	for _, c := range []struct {
		name  string
		f     Flow
		state model.ConnState // "" means unset
		end   model.EndReason
	}{
		{"syn unanswered", tcp(ctTCPSynSent, 0x8), model.ConnS0, model.EndTimeout},
		{"originator reset before a reply", tcp(ctTCPClose, 0x8), model.ConnRSTOS0, model.EndClosed},
		{"rejected", tcp(ctTCPClose, 0x8|ipsSeenReply), model.ConnREJ, model.EndClosed},
		{"established expired", tcp(ctTCPEstablished, 0x8|ipsSeenReply|ipsAssured), model.ConnS1, model.EndTimeout},
		{"closed by FINs", tcp(ctTCPTimeWait, 0x8|ipsSeenReply|ipsAssured), model.ConnSF, model.EndClosed},
		{"reset after the handshake: direction unknown", tcp(ctTCPClose, 0x8|ipsSeenReply|ipsAssured), "", model.EndClosed},
		{"half closed: direction unknown", tcp(5, 0x8|ipsSeenReply|ipsAssured), "", model.EndTimeout},
		{"udp answered", Flow{Proto: model.ProtoUDP, Status: ipsSeenReply, OrigPackets: 1}, model.ConnSF, model.EndTimeout},
		{"udp one way", Flow{Proto: model.ProtoUDP, OrigPackets: 1}, model.ConnS0, model.EndTimeout},
		{"icmp", Flow{Proto: model.ProtoICMP, OrigPackets: 1}, model.ConnOTH, model.EndTimeout},
	} {
		got := EventConn(Event{Type: EventDestroy, Flow: c.f})
		if got.End != c.end {
			t.Errorf("%s: end %q, want %q", c.name, got.End, c.end)
		}
		if c.state == "" {
			if got.Has(model.FieldConnState) {
				t.Errorf("%s: conn_state %s, want unset", c.name, got.ConnState)
			}
		} else if got.ConnState != c.state || !got.Has(model.FieldConnState) {
			t.Errorf("%s: conn_state %q, want %s", c.name, got.ConnState, c.state)
		}
	}
	f := tcp(ctTCPTimeWait, 0xe)
	c := EventConn(Event{Type: EventDestroy, Flow: f})
	if !c.TS.Equal(start) || c.Duration != 1500*time.Millisecond || c.OrigIPBytes != 400 || c.RespIPBytes != 900 || c.OrigPkts != 6 || c.RespPkts != 5 ||
		c.Has(model.FieldOrigBytes) || c.Has(model.FieldHistory) || c.End != model.EndClosed || c.Orig != f.Orig.Src || c.Resp != f.Orig.Dst || !strings.HasPrefix(c.UID, "C") {
		t.Errorf("destroy record %+v", c)
	}
	open := EventConn(Event{Type: EventNew, Flow: f})
	if open.End != model.EndOpen || open.UID != c.UID {
		t.Errorf("new record: end %q uid %s, want open and %s", open.End, open.UID, c.UID)
	}
	// An update to TIME_WAIT ends the connection for its endpoints; one to
	// ESTABLISHED is still in progress.
	if up := EventConn(Event{Type: EventUpdate, Flow: f}); up.End != model.EndClosed || up.ConnState != model.ConnSF || up.UID != c.UID {
		t.Errorf("update to TIME_WAIT: end %q state %s", up.End, up.ConnState)
	}
	if up := EventConn(Event{Type: EventUpdate, Flow: tcp(ctTCPEstablished, 0xe)}); up.End != model.EndOpen || up.ConnState != model.ConnS1 {
		t.Errorf("update to ESTABLISHED: end %q state %s", up.End, up.ConnState)
	}
	// Without accounting or timestamps those fields are unset, not zero.
	bare := EventConn(Event{Type: EventDestroy, Flow: Flow{Proto: model.ProtoTCP, TCPState: ctTCPTimeWait}})
	for _, fld := range []model.ConnField{model.FieldDuration, model.FieldOrigPkts, model.FieldOrigIPBytes, model.FieldRespPkts, model.FieldRespIPBytes} {
		if bare.Has(fld) {
			t.Errorf("no acct/timestamps: field %d set", fld)
		}
	}
}

func BenchmarkParseEvents(b *testing.B) {
	msg := ctMsg(2, 0, encodeConntrack(fullFlow))
	b.ReportAllocs()
	for b.Loop() {
		if err := parseEvents(msg, func(Event) {}, func(error) {}); err != nil {
			b.Fatal(err)
		}
	}
}

// End to end: a short TCP connection inside a namespace with conntrack on
// yields a destroy event whose record has the tuple, the counters and a
// duration that spans the connection.
func TestConntrackEventsNetns(t *testing.T) {
	ns := newConntrackNetns(t)
	// Short TIME_WAIT and CLOSE timeouts (per namespace), so the entry
	// ends within the test.
	if err := InNetns(ns, func() error {
		for _, s := range []string{"nf_conntrack_tcp_timeout_time_wait", "nf_conntrack_tcp_timeout_close"} {
			if err := writeSysctl("/proc/sys/net/netfilter/"+s, "1"); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	var warns []error
	l, err := ListenConntrack(EventOptions{Netns: ns, Warn: func(err error) { warns = append(warns, err) }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var (
		mu     sync.Mutex
		events []Event
	)
	done := make(chan error, 1)
	go func() {
		done <- l.Run(ctx, func(e Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	}()

	var client, server string
	hold := 300 * time.Millisecond
	began := time.Now()
	if err := InNetns(ns, func() error {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		c, err := net.Dial("tcp4", ln.Addr().String())
		if err != nil {
			return err
		}
		s, err := ln.Accept()
		if err != nil {
			return err
		}
		client, server = c.LocalAddr().String(), ln.Addr().String()
		if _, err := c.Write([]byte("hello")); err != nil {
			return err
		}
		buf := make([]byte, 5)
		if _, err := s.Read(buf); err != nil {
			return err
		}
		if _, err := s.Write([]byte("world!")); err != nil {
			return err
		}
		// Read all of it: unread data would make close send a RST.
		if _, err := io.ReadFull(c, make([]byte, 6)); err != nil {
			return err
		}
		time.Sleep(hold)
		c.Close()
		s.Close()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ended := time.Now()
	find := func(typ EventType) (Event, bool) {
		mu.Lock()
		defer mu.Unlock()
		for _, e := range events {
			if e.Type == typ && e.Flow.Orig.Src == ap(client) && e.Flow.Orig.Dst == ap(server) {
				return e, true
			}
		}
		return Event{}, false
	}
	var destroy Event
	for deadline := time.Now().Add(45 * time.Second); ; {
		var ok bool
		if destroy, ok = find(EventDestroy); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no destroy event for %s -> %s; events %+v", client, server, events)
		}
		// A dump reaps expired entries it meets, which sends their
		// destroy events sooner than the garbage collector would.
		_ = InNetns(ns, func() error { _, err := Conntrack(context.Background()); return err })
		time.Sleep(200 * time.Millisecond)
	}
	if _, ok := find(EventNew); !ok {
		t.Errorf("no new event for %s -> %s", client, server)
	}
	c := EventConn(destroy)
	t.Logf("destroy: %s; conn %+v", formatFlow(destroy.Flow), *c)
	if c.Proto != model.ProtoTCP || c.Orig != ap(client) || c.Resp != ap(server) || c.End != model.EndClosed {
		t.Errorf("tuple %v %v -> %v end %s", c.Proto, c.Orig, c.Resp, c.End)
	}
	if c.ConnState != model.ConnSF {
		t.Errorf("conn_state %q, want SF (closed by FINs, then TIME_WAIT)", c.ConnState)
	}
	// SYN, ACK, data, ACK of "world!", FIN, ACK at least from the client;
	// the IP bytes include 5 and 6 bytes of data and 20-byte IP headers.
	if c.OrigPkts < 4 || c.RespPkts < 3 || c.OrigIPBytes < 4*40+5 || c.RespIPBytes < 3*40+6 || c.Has(model.FieldOrigBytes) {
		t.Errorf("counters: orig %d pkts %d IP bytes, resp %d pkts %d IP bytes", c.OrigPkts, c.OrigIPBytes, c.RespPkts, c.RespIPBytes)
	}
	if c.TS.Before(began.Add(-time.Second)) || c.TS.After(ended) || c.Duration < hold || c.Duration > time.Since(began) {
		t.Errorf("ts %v duration %v: want a start within the test and at least %v", c.TS, c.Duration, hold)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if st := l.Stats(); st.Events < 2 || st.Overruns != 0 || st.Malformed != 0 {
		t.Errorf("stats %+v", st)
	}
	if len(warns) > 0 {
		t.Errorf("warnings: %v", warns)
	}
}

// ENOBUFS: a receive buffer too small for a burst of events loses some;
// the listener counts the overrun and keeps reading.
func TestConntrackEventsOverrun(t *testing.T) {
	ns := newConntrackNetns(t)
	l, err := ListenConntrack(EventOptions{Netns: ns, RcvBuf: 1, Warn: func(error) {}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Make events while nobody reads: a burst of UDP flows.
	if err := InNetns(ns, func() error {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer pc.Close()
		for i := range 300 {
			c, err := net.Dial("udp4", pc.LocalAddr().String())
			if err != nil {
				return err
			}
			_, _ = c.Write([]byte{byte(i)})
			c.Close()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	n := 0
	if err := l.Run(ctx, func(Event) { n++ }); err != nil {
		t.Fatal(err)
	}
	st := l.Stats()
	t.Logf("%d events read, %+v", n, st)
	if st.Overruns == 0 || n == 0 || n >= 300 {
		t.Errorf("want an overrun counted and some (not all) of 300 events read: %d read, %+v", n, st)
	}
}

func writeSysctl(path, v string) error {
	fd, err := unix.Open(path, unix.O_WRONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte(v+"\n"))
	return err
}
