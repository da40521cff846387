package fleet

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A Spool is a sentry's on-disk queue of record messages awaiting the
// stream's acknowledgement, so that neither a broker outage longer than
// memory holds nor a crash of the sentry loses a record.
//
// Records get consecutive sequence numbers. They are appended to segment
// files named by the sequence number of their first record; a frame is a
// little-endian uint32 payload length, the payload's CRC-32C and the
// payload. The file "cursor" holds the first sequence number not yet
// acknowledged; segments wholly below it are deleted. On open, the last
// segment is checked frame by frame and cut at the first torn or corrupt
// frame (a crash in the middle of a write), and reading resumes at the
// cursor, so records acknowledged after the cursor was last saved are
// published again (the stream's dedup window usually drops them).
//
// One goroutine appends (Append, Flush, Sync) and one reads (Reader, Ack,
// SaveCursor); they may differ.
type Spool struct {
	dir      string
	maxBytes int64
	segMax   int64    // bytes per segment file before the next one starts
	lock     *os.File // flock: one process per spool

	mu   sync.Mutex
	segs []uint64 // first sequence number of each segment, ascending

	size    atomic.Int64  // bytes in segment files
	written atomic.Uint64 // records below this are flushed to the OS and readable
	acked   atomic.Uint64 // records below this are acknowledged
	saved   uint64        // cursor value last written (reader goroutine)
	notify  chan struct{} // signalled after each Flush

	// writer state
	w      *os.File
	bw     *bufio.Writer
	wBytes int64
	next   uint64
	frame  []byte
}

// ErrSpoolFull is returned by Append when the spool holds MaxBytes.
var ErrSpoolFull = errors.New("spool full")

const (
	segmentMax   = 16 << 20
	frameHeader  = 8
	maxFrame     = 16 << 20 // larger lengths are corruption
	cursorFile   = "cursor"
	segmentExt   = ".seg"
	flagUpdate   = 1
	spoolLockTry = syscall.LOCK_EX | syscall.LOCK_NB
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// OpenSpool opens (creating it if needed) the spool in dir, holding at most
// maxBytes of records.
func OpenSpool(dir string, maxBytes int64) (*Spool, error) {
	if maxBytes <= 0 {
		return nil, fmt.Errorf("spool %s: max bytes %d must be positive", dir, maxBytes)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), spoolLockTry); err != nil {
		lock.Close()
		return nil, fmt.Errorf("spool %s is in use by another process: %w", dir, err)
	}
	s := &Spool{dir: dir, maxBytes: maxBytes, segMax: segmentMax, lock: lock, notify: make(chan struct{}, 1)}
	if err := s.recover(); err != nil {
		lock.Close()
		return nil, err
	}
	return s, nil
}

// recover reads the cursor, deletes acknowledged segments and cuts the last
// segment at its first bad frame.
func (s *Spool) recover() error {
	cursor, err := readCursor(filepath.Join(s.dir, cursorFile))
	if err != nil {
		return err
	}
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), segmentExt)
		if !ok || e.IsDir() {
			continue
		}
		first, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue // not ours
		}
		s.segs = append(s.segs, first)
	}
	slices.Sort(s.segs)
	// A segment is wholly acknowledged when the next one starts at or below
	// the cursor.
	for len(s.segs) > 1 && s.segs[1] <= cursor {
		if err := os.Remove(s.segPath(s.segs[0])); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		s.segs = s.segs[1:]
	}
	s.next = cursor
	if n := len(s.segs); n > 0 {
		last := s.segs[n-1]
		count, good, err := scanSegment(s.segPath(last))
		if err != nil {
			return err
		}
		if err := os.Truncate(s.segPath(last), good); err != nil {
			return fmt.Errorf("spool: cutting torn tail: %w", err)
		}
		if count == 0 {
			// Created but never completed a frame: the writer starts a
			// segment of the same name again.
			if err := os.Remove(s.segPath(last)); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			s.segs = s.segs[:n-1]
		}
		s.next = max(last+count, cursor)
		if last+count < cursor { // everything spooled was acknowledged
			for _, first := range s.segs {
				_ = os.Remove(s.segPath(first))
			}
			s.segs = nil
		}
	}
	for _, first := range s.segs {
		if fi, err := os.Stat(s.segPath(first)); err == nil {
			s.size.Add(fi.Size())
		}
	}
	if len(s.segs) > 0 && s.segs[0] > cursor {
		cursor = s.segs[0] // records below were lost (deleted by hand)
	}
	s.acked.Store(cursor)
	s.saved = cursor
	s.written.Store(s.next)
	return nil
}

// scanSegment counts a segment's good frames and returns the length of the
// good prefix.
func scanSegment(path string) (count uint64, good int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, fmt.Errorf("spool: %w", err)
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 1<<16)
	var buf []byte
	for {
		payload, err := readFrame(br, buf)
		if err != nil {
			return count, good, nil // EOF or a torn/corrupt frame: the tail is cut
		}
		buf = payload[:0]
		count++
		good += int64(frameHeader + len(payload))
	}
}

func readCursor(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("spool cursor: %w", err)
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("spool cursor %s: %q is not a sequence number", path, strings.TrimSpace(string(b)))
	}
	return v, nil
}

func (s *Spool) segPath(first uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d%s", first, segmentExt))
}

// Append adds m to the spool; it is readable after the next Flush.
func (s *Spool) Append(m *nats.Msg) error {
	s.frame = encodeFrame(s.frame[:0], m)
	if s.size.Load()+int64(len(s.frame)) > s.maxBytes {
		return ErrSpoolFull
	}
	if s.w == nil || s.wBytes+int64(len(s.frame)) > s.segMax && s.wBytes > 0 {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	if _, err := s.bw.Write(s.frame); err != nil {
		return fmt.Errorf("spool write: %w", err)
	}
	s.wBytes += int64(len(s.frame))
	s.size.Add(int64(len(s.frame)))
	s.next++
	return nil
}

// rotate flushes the current segment and starts one at s.next.
func (s *Spool) rotate() error {
	if s.w != nil {
		if err := s.Flush(); err != nil {
			return err
		}
		if err := s.w.Close(); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	f, err := os.OpenFile(s.segPath(s.next), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	s.mu.Lock()
	s.segs = append(s.segs, s.next)
	s.mu.Unlock()
	s.w, s.wBytes = f, 0
	if s.bw == nil {
		s.bw = bufio.NewWriterSize(f, 1<<16)
	} else {
		s.bw.Reset(f)
	}
	return nil
}

// Flush hands the appended records to the OS (a crash of the process no
// longer loses them) and makes them readable.
func (s *Spool) Flush() error {
	if s.bw != nil && s.bw.Buffered() > 0 {
		if err := s.bw.Flush(); err != nil {
			return fmt.Errorf("spool write: %w", err)
		}
	}
	if s.written.Load() != s.next {
		s.written.Store(s.next)
		select {
		case s.notify <- struct{}{}:
		default:
		}
	}
	return nil
}

// Sync flushes and forces the current segment to disk (a crash of the
// machine no longer loses what was appended).
func (s *Spool) Sync() error {
	if err := s.Flush(); err != nil {
		return err
	}
	if s.w != nil {
		if err := s.w.Sync(); err != nil {
			return fmt.Errorf("spool sync: %w", err)
		}
	}
	return nil
}

// Written is the sequence number after the last readable record.
func (s *Spool) Written() uint64 { return s.written.Load() }

// Acked is the first sequence number not yet acknowledged.
func (s *Spool) Acked() uint64 { return s.acked.Load() }

// Backlog is the number of spooled records not yet acknowledged.
func (s *Spool) Backlog() uint64 { return s.written.Load() - s.acked.Load() }

// Bytes is the size of the spool's segment files.
func (s *Spool) Bytes() int64 { return s.size.Load() }

// Notify is signalled when Flush made new records readable.
func (s *Spool) Notify() <-chan struct{} { return s.notify }

// Ack records that every record below seq is acknowledged.
func (s *Spool) Ack(seq uint64) {
	if seq > s.acked.Load() {
		s.acked.Store(seq)
	}
}

// SaveCursor writes the acknowledged position (write, sync, rename) and
// deletes the segments below it except the one being written.
func (s *Spool) SaveCursor() error {
	acked := s.acked.Load()
	if acked == s.saved {
		return nil
	}
	path := filepath.Join(s.dir, cursorFile)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("spool cursor: %w", err)
	}
	_, err = f.WriteString(strconv.FormatUint(acked, 10) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		return fmt.Errorf("spool cursor: %w", err)
	}
	s.saved = acked
	s.mu.Lock()
	var drop []uint64
	for len(s.segs) > 1 && s.segs[1] <= acked {
		drop = append(drop, s.segs[0])
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	for _, first := range drop {
		p := s.segPath(first)
		if fi, err := os.Stat(p); err == nil {
			s.size.Add(-fi.Size())
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

// Close flushes, syncs and saves the cursor; the spool keeps what was not
// acknowledged for the next open.
func (s *Spool) Close() error {
	err := s.Sync()
	if s.w != nil {
		if cerr := s.w.Close(); err == nil && cerr != nil {
			err = cerr
		}
		s.w = nil
	}
	if cerr := s.SaveCursor(); err == nil {
		err = cerr
	}
	s.lock.Close() // releases the flock
	return err
}

// encodeFrame appends m's frame: flags, subject, msg id, data.
func encodeFrame(dst []byte, m *nats.Msg) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameHeader)...)
	var flags byte
	if m.Header.Get(HeaderUpdate) == "1" {
		flags |= flagUpdate
	}
	dst = append(dst, flags)
	dst = binary.AppendUvarint(dst, uint64(len(m.Subject)))
	dst = append(dst, m.Subject...)
	id := m.Header.Get(jetstream.MsgIDHeader)
	dst = binary.AppendUvarint(dst, uint64(len(id)))
	dst = append(dst, id...)
	dst = append(dst, m.Data...)
	payload := dst[start+frameHeader:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(payload, castagnoli))
	return dst
}

// readFrame reads one frame's payload into buf (grown as needed).
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var h [frameHeader]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return nil, err
	}
	n := binary.LittleEndian.Uint32(h[:])
	if n == 0 || n > maxFrame {
		return nil, fmt.Errorf("frame length %d out of range", n)
	}
	buf = slices.Grow(buf[:0], int(n))[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	if crc32.Checksum(buf, castagnoli) != binary.LittleEndian.Uint32(h[4:]) {
		return nil, errors.New("frame checksum mismatch")
	}
	return buf, nil
}

// decodeFrame turns a payload back into a message.
func decodeFrame(p []byte) (*nats.Msg, error) {
	if len(p) < 1 {
		return nil, errors.New("empty frame")
	}
	flags, rest := p[0], p[1:]
	field := func(what string) (string, error) {
		n, k := binary.Uvarint(rest)
		if k <= 0 || n > uint64(len(rest)-k) {
			return "", fmt.Errorf("frame %s length out of range", what)
		}
		v := string(rest[k : k+int(n)])
		rest = rest[k+int(n):]
		return v, nil
	}
	subject, err := field("subject")
	if err != nil {
		return nil, err
	}
	id, err := field("msg id")
	if err != nil {
		return nil, err
	}
	m := nats.NewMsg(subject)
	m.Data = slices.Clone(rest)
	m.Header.Set(jetstream.MsgIDHeader, id)
	if flags&flagUpdate != 0 {
		m.Header.Set(HeaderUpdate, "1")
	}
	return m, nil
}

// SpoolReader reads a spool's records in order from a sequence number.
type SpoolReader struct {
	s     *Spool
	seq   uint64 // next record to return
	f     *os.File
	br    *bufio.Reader
	first uint64 // first sequence number of the open segment
	buf   []byte
}

// Reader returns a reader starting at the first unacknowledged record.
func (s *Spool) Reader() *SpoolReader { return &SpoolReader{s: s, seq: s.acked.Load()} }

// Next returns the next record and its sequence number; ok is false when
// every written record has been read. An error means the spool is damaged
// at that record (it names the segment).
func (r *SpoolReader) Next() (m *nats.Msg, seq uint64, ok bool, err error) {
	if r.seq >= r.s.written.Load() {
		return nil, 0, false, nil
	}
	for attempt := 0; ; attempt++ {
		if r.f == nil {
			if err := r.open(); err != nil {
				return nil, 0, false, err
			}
		}
		payload, err := readFrame(r.br, r.buf)
		if errors.Is(err, io.EOF) && attempt == 0 {
			// The record is written but not in this segment: the writer
			// moved on to the segment that starts with it.
			r.close()
			continue
		}
		if err != nil {
			return nil, 0, false, fmt.Errorf("spool %s record %d: %w", r.s.segPath(r.first), r.seq, err)
		}
		r.buf = payload
		m, err := decodeFrame(payload)
		if err != nil {
			return nil, 0, false, fmt.Errorf("spool %s record %d: %w", r.s.segPath(r.first), r.seq, err)
		}
		seq = r.seq
		r.seq++
		return m, seq, true, nil
	}
}

// open opens the segment holding r.seq and skips to it.
func (r *SpoolReader) open() error {
	r.s.mu.Lock()
	i, found := slices.BinarySearch(r.s.segs, r.seq)
	if !found {
		i--
	}
	var first uint64
	if i >= 0 {
		first = r.s.segs[i]
	}
	r.s.mu.Unlock()
	if i < 0 {
		return fmt.Errorf("spool %s: no segment holds record %d", r.s.dir, r.seq)
	}
	f, err := os.Open(r.s.segPath(first))
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	r.f, r.first = f, first
	if r.br == nil {
		r.br = bufio.NewReaderSize(f, 1<<16)
	} else {
		r.br.Reset(f)
	}
	for seq := first; seq < r.seq; seq++ {
		p, err := readFrame(r.br, r.buf)
		if err != nil {
			r.close()
			return fmt.Errorf("spool %s: skipping to record %d: %w", r.s.segPath(first), r.seq, err)
		}
		r.buf = p
	}
	return nil
}

func (r *SpoolReader) close() {
	if r.f != nil {
		r.f.Close()
		r.f = nil
	}
}

// Close releases the reader's file.
func (r *SpoolReader) Close() { r.close() }
