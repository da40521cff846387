package fleet

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// testSpool is a spool in a fresh directory.
func testSpool(t testing.TB) *Spool {
	t.Helper()
	s, err := OpenSpool(t.TempDir(), 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func spoolMsg(i int) *nats.Msg {
	m := nats.NewMsg(fmt.Sprintf("tcpsentry.conn.%d.%d.h", i%16, i%7))
	m.Data = fmt.Appendf(nil, `{"uid":"C%d","pad":%q}`, i, strings.Repeat("x", i%300))
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("h/C%d/%08x", i, i))
	if i%5 == 0 {
		m.Header.Set(HeaderUpdate, "1")
	}
	return m
}

func appendN(t *testing.T, s *Spool, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		if err := s.Append(spoolMsg(i)); err != nil {
			t.Fatalf("append %d: %v", i, err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
}

// readAll reads every written record and checks each against spoolMsg.
func readAll(t *testing.T, s *Spool, wantFrom int) int {
	t.Helper()
	r := s.Reader()
	defer r.Close()
	n := 0
	for {
		m, seq, ok, err := r.Next()
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return n
		}
		want := spoolMsg(wantFrom + n)
		if seq != uint64(wantFrom+n) || m.Subject != want.Subject || !bytes.Equal(m.Data, want.Data) ||
			m.Header.Get(jetstream.MsgIDHeader) != want.Header.Get(jetstream.MsgIDHeader) ||
			m.Header.Get(HeaderUpdate) != want.Header.Get(HeaderUpdate) {
			t.Fatalf("record %d (seq %d) = %s %q %v, want %s %q %v", wantFrom+n, seq, m.Subject, m.Data, m.Header, want.Subject, want.Data, want.Header)
		}
		n++
	}
}

func segments(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segmentExt))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestSpoolLifecycle: records survive rotation, acknowledgement deletes
// whole segments only, and a reopened spool resumes at the saved cursor.
func TestSpoolLifecycle(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	s.segMax = 4096
	appendN(t, s, 0, 1000)
	if got := readAll(t, s, 0); got != 1000 {
		t.Fatalf("read %d records, want 1000", got)
	}
	nseg := len(segments(t, dir))
	if nseg < 10 {
		t.Fatalf("%d segments for 1000 records of 4 KiB segments", nseg)
	}
	before := s.Bytes()
	s.Ack(600)
	if err := s.SaveCursor(); err != nil {
		t.Fatal(err)
	}
	if s.Bytes() >= before || len(segments(t, dir)) >= nseg {
		t.Fatalf("acknowledging 600 of 1000 records left %d of %d segments, %d of %d bytes", len(segments(t, dir)), nseg, s.Bytes(), before)
	}
	if got := readAll(t, s, 600); got != 400 {
		t.Fatalf("after ack, read %d records, want 400", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s, err = OpenSpool(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	if s.Backlog() != 400 || s.Acked() != 600 || s.Written() != 1000 {
		t.Fatalf("reopened: backlog %d acked %d written %d, want 400 600 1000", s.Backlog(), s.Acked(), s.Written())
	}
	appendN(t, s, 1000, 10)
	if got := readAll(t, s, 600); got != 410 {
		t.Fatalf("reopened, read %d records, want 410", got)
	}
	s.Ack(1010)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = OpenSpool(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Backlog() != 0 || s.Written() != 1010 {
		t.Fatalf("all acknowledged: backlog %d written %d", s.Backlog(), s.Written())
	}
	appendN(t, s, 1010, 3)
	if got := readAll(t, s, 1010); got != 3 {
		t.Fatalf("read %d, want 3", got)
	}
}

// TestSpoolTornTail: a crash in the middle of a write leaves a partial or
// corrupt last frame; reopening cuts it and keeps every whole record.
func TestSpoolTornTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		harm func(path string, size int64) error
		keep int
	}{
		{"partial frame", func(p string, size int64) error { return os.Truncate(p, size-5) }, 99},
		{"header only", func(p string, size int64) error {
			return appendBytes(p, []byte{20, 0, 0, 0, 1, 2, 3, 4})
		}, 100},
		{"garbage", func(p string, size int64) error { return appendBytes(p, []byte("not a frame at all")) }, 100},
		{"flipped byte", func(p string, size int64) error { return flipByte(p, size-3) }, 99},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s, err := OpenSpool(dir, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			appendN(t, s, 0, 100)
			s.lock.Close() // a crash: no Close, no cursor
			segs := segments(t, dir)
			last := segs[len(segs)-1]
			fi, err := os.Stat(last)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.harm(last, fi.Size()); err != nil {
				t.Fatal(err)
			}
			s, err = OpenSpool(dir, 1<<30)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.Backlog() != uint64(tc.keep) {
				t.Fatalf("backlog %d after reopen, want %d", s.Backlog(), tc.keep)
			}
			appendN(t, s, tc.keep, 5)
			if got := readAll(t, s, 0); got != tc.keep+5 {
				t.Fatalf("read %d records, want %d", got, tc.keep+5)
			}
		})
	}
}

// TestSpoolEmptyLastSegment: a crash right after a new segment was
// created (or with its only frame torn) leaves an empty last segment; the
// reopened spool must not list that segment twice when it writes a new
// one of the same name, nor delete the file it writes.
func TestSpoolEmptyLastSegment(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	s.segMax = 2048
	appendN(t, s, 0, 40)
	s.lock.Close() // crash
	segs := segments(t, dir)
	// The next segment, created but holding only a torn frame.
	next := filepath.Join(dir, fmt.Sprintf("%020d%s", 40, segmentExt))
	if err := os.WriteFile(next, []byte{9, 0, 0}, 0o600); err != nil {
		t.Fatal(err)
	}
	s, err = OpenSpool(dir, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	s.segMax = 2048
	if s.Backlog() != 40 {
		t.Fatalf("backlog %d, want 40", s.Backlog())
	}
	appendN(t, s, 40, 40)
	s.Ack(80)
	if err := s.SaveCursor(); err != nil {
		t.Fatal(err)
	}
	appendN(t, s, 80, 5)
	if got := readAll(t, s, 80); got != 5 {
		t.Fatalf("after acknowledging everything, read %d new records, want 5", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if n := len(segments(t, dir)); n == 0 || n > len(segs)+2 {
		t.Fatalf("%d segments left", n)
	}
}

func appendBytes(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func flipByte(path string, at int64) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	b[at] ^= 0xff
	return os.WriteFile(path, b, 0o600)
}

func TestSpoolLimitsAndErrors(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenSpool(dir, 2000)
	if err != nil {
		t.Fatal(err)
	}
	var full error
	n := 0
	for i := range 100 {
		if full = s.Append(spoolMsg(i)); full != nil {
			break
		}
		n++
	}
	if !errors.Is(full, ErrSpoolFull) || n == 0 || n >= 100 {
		t.Fatalf("2000-byte spool took %d records, then %v", n, full)
	}
	if _, err := OpenSpool(dir, 1<<20); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open of a spool in use: %v", err)
	}
	s.Close()

	bad := t.TempDir()
	if err := os.WriteFile(filepath.Join(bad, cursorFile), []byte("twelve\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenSpool(bad, 1<<20); err == nil || !strings.Contains(err.Error(), filepath.Join(bad, cursorFile)) {
		t.Fatalf("bad cursor: %v", err)
	}
	// A segment damaged in its middle (not a torn tail) is reported by the
	// reader, naming the segment and record.
	mid := t.TempDir()
	s, err = OpenSpool(mid, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	s.segMax = 2048
	appendN(t, s, 0, 50)
	s.lock.Close()
	if err := flipByte(segments(t, mid)[0], 12); err != nil {
		t.Fatal(err)
	}
	s, err = OpenSpool(mid, 1<<30)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	_, _, _, err = s.Reader().Next()
	if err == nil || !strings.Contains(err.Error(), "record 0") || !strings.Contains(err.Error(), segmentExt) {
		t.Fatalf("damaged segment: %v", err)
	}
}

// FuzzSpoolSegment: a segment file is bytes from disk that a crash or a
// bad disk may have mangled; opening and reading must never panic.
func FuzzSpoolSegment(f *testing.F) {
	var seed []byte
	for i := range 5 {
		seed = encodeFrame(seed, spoolMsg(i))
	}
	f.Add(seed)
	f.Add(seed[:len(seed)-7])
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0})
	f.Add(encodeFrame(nil, nats.NewMsg("")))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("%020d%s", 0, segmentExt)), data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, err := OpenSpool(dir, 1<<30)
		if err != nil {
			return
		}
		defer s.Close()
		r := s.Reader()
		defer r.Close()
		for range 10000 {
			_, _, ok, err := r.Next()
			if err != nil || !ok {
				return
			}
		}
	})
}

// BenchmarkSpool: the cost a record adds on its way to the broker: encode,
// append (batched flush, as Run does) and read back.
func BenchmarkSpool(b *testing.B) {
	s, err := OpenSpool(b.TempDir(), 1<<40)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	recs := outageRecords(0, 1024)
	r := s.Reader()
	defer r.Close()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if err := s.Append(Encode(recs[i%len(recs)], "h", 16)); err != nil {
			b.Fatal(err)
		}
		if i%256 == 255 || i == b.N-1 {
			if err := s.Flush(); err != nil {
				b.Fatal(err)
			}
			for {
				_, seq, ok, err := r.Next()
				if err != nil {
					b.Fatal(err)
				}
				if !ok {
					break
				}
				s.Ack(seq + 1)
			}
			if i%65536 == 65535 {
				if err := s.SaveCursor(); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}
