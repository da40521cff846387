// Package capture reads packets from pcap and pcapng files (plain or
// gzip-compressed, from a path or stdin), writes classic pcap, and strips
// link-layer headers down to the network layer. Everything here parses
// untrusted bytes: it never panics, and its errors name the file, the packet
// number and the field.
package capture

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// maxRecord bounds one packet record or pcapng block, so that a corrupt
// length field cannot make the reader allocate gigabytes.
const maxRecord = 16 << 20

// bufSize is the read buffer. Records that fit in it are handed out in
// place, without a copy; 256 KiB keeps a buffer's worth in L2 cache
// between the read and the decoding, and makes one read(2) per ~300
// full-size packets.
const bufSize = 256 << 10

// mapWindow is how much of a memory-mapped file is mapped at a time:
// enough that remapping is rare, little enough that the pages it keeps
// resident stay few (a longer record gets a window of its own size).
const mapWindow = 8 << 20

// Packet is one captured frame. Data is owned by the Reader and is valid
// only until the next call to Next or Close: copy what must outlive it
// (it may point into a memory-mapped file).
type Packet struct {
	Time    time.Time
	Data    []byte   // captured bytes (may be shorter than WireLen)
	WireLen int      // length of the frame on the wire
	Link    LinkType // link-layer type of Data
	Iface   int      // pcapng interface index; 0 for pcap
	Num     int      // 1-based number of the packet (or pcapng block) in the file
}

// Error is a problem in a capture file. A non-fatal error means one packet
// was skipped and reading can go on; after a fatal one Next returns io.EOF.
type Error struct {
	File   string // file name as given ("-" for stdin)
	Packet int    // 1-based packet/block number; 0 for the file header
	Offset int64  // byte offset of the record in the (decompressed) stream
	Field  string // which field was wrong
	Err    error
	Fatal  bool
}

func (e *Error) Error() string {
	where := e.File
	if e.Packet > 0 {
		where = fmt.Sprintf("%s: packet %d", where, e.Packet)
	} else {
		where += ": header"
	}
	return fmt.Sprintf("%s (offset %d): %s: %v", where, e.Offset, e.Field, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNotCapture says the input is neither pcap nor pcapng.
var ErrNotCapture = errors.New("not a pcap or pcapng file")

// format is what Reader delegates to: one per file format.
type format interface {
	next(p *Packet) error
	name() string
}

// Reader reads packets from a pcap or pcapng stream.
type Reader struct {
	name   string
	src    *source
	f      format
	closer []io.Closer
	done   bool
}

// Open opens a capture file; "-" reads standard input. gzip compression is
// detected from the content, not the name.
//
// An uncompressed regular file is read through a memory map on Linux,
// which saves copying every byte out of the page cache. If such a file is
// truncated while it is read, touching a packet's Data beyond the new end
// faults (SIGBUS): a caller that must survive that runs with
// debug.SetPanicOnFault and recovers, as flow.Run does.
func Open(path string) (*Reader, error) {
	if path == "-" {
		return NewReader(os.Stdin, "-")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	if m := newMapping(f); m != nil {
		r, err := newReader(&source{m: m}, path)
		if err != nil {
			m.Close()
			f.Close()
			return nil, err
		}
		r.closer = append(r.closer, f, m)
		return r, nil
	}
	r, err := NewReader(f, path)
	if err != nil {
		f.Close()
		return nil, err
	}
	r.closer = append(r.closer, f)
	return r, nil
}

// NewReader reads a capture from r; name is used in errors.
func NewReader(r io.Reader, name string) (*Reader, error) {
	var closers []io.Closer
	b := bufio.NewReaderSize(r, bufSize)
	head, err := b.Peek(4)
	if err != nil && len(head) < 2 {
		return nil, &Error{File: name, Field: "magic", Err: fmt.Errorf("%w: file too short", ErrNotCapture), Fatal: true}
	}
	if head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(b)
		if err != nil {
			return nil, &Error{File: name, Field: "gzip header", Err: err, Fatal: true}
		}
		closers = append(closers, zr)
		b = bufio.NewReaderSize(zr, bufSize)
	}
	rd, err := newReader(&source{br: b}, name)
	if err != nil {
		return nil, err
	}
	rd.closer = closers
	return rd, nil
}

// newReader reads the file header from src and picks the format.
func newReader(src *source, name string) (*Reader, error) {
	rd := &Reader{name: name, src: src}
	var magic [4]byte
	if err := rd.src.read(magic[:]); err != nil {
		return nil, &Error{File: name, Field: "magic", Err: fmt.Errorf("%w: %v", ErrNotCapture, err), Fatal: true}
	}
	switch {
	case binary.LittleEndian.Uint32(magic[:]) == ngBlockSHB:
		ng, err := newNG(rd.src, name)
		if err != nil {
			return nil, err
		}
		rd.f = ng
	default:
		pc, err := newPcap(rd.src, name, magic)
		if err != nil {
			return nil, err
		}
		rd.f = pc
	}
	return rd, nil
}

// Format is "pcap" or "pcapng".
func (r *Reader) Format() string { return r.f.name() }

// Name is the file name given to Open or NewReader.
func (r *Reader) Name() string { return r.name }

// Offset is how many (decompressed) bytes have been consumed; a progress
// indicator can compare it with the file size for uncompressed input.
func (r *Reader) Offset() int64 { return r.src.offset() }

// Next reads the next packet into p. It returns io.EOF at the end. Any
// other error is an *Error: when not Fatal, one packet was skipped and the
// caller may call Next again; after a fatal error Next returns io.EOF.
func (r *Reader) Next(p *Packet) error {
	if r.done {
		return io.EOF
	}
	err := r.f.next(p)
	if err == nil {
		return nil
	}
	var ce *Error
	if err == io.EOF || (errors.As(err, &ce) && ce.Fatal) {
		r.done = true
	}
	return err
}

// Close releases the file (not stdin).
func (r *Reader) Close() error {
	var first error
	for i := len(r.closer) - 1; i >= 0; i-- {
		if err := r.closer[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	r.closer = nil
	return first
}

// source is the (decompressed) byte stream a format parses, counting the
// bytes consumed for offsets in errors: a memory-mapped file, or a
// buffered reader.
type source struct {
	m   *mapping // when not nil, the other fields are unused
	br  *bufio.Reader
	n   int64
	big []byte // records larger than br's buffer are copied here
}

// offset is the number of bytes consumed.
func (s *source) offset() int64 {
	if s.m != nil {
		return s.m.offset()
	}
	return s.n
}

// next consumes the next n bytes and returns them. They are valid until
// the next call: in place in the read buffer when they fit, else copied.
// Like io.ReadFull, it returns io.EOF if the stream ended before the
// first byte and io.ErrUnexpectedEOF if it ended inside.
func (s *source) next(n int) ([]byte, error) {
	if s.m != nil {
		return s.m.next(n)
	}
	if n <= s.br.Size() {
		b, err := s.br.Peek(n)
		if err != nil {
			m, _ := s.br.Discard(len(b))
			s.n += int64(m)
			if len(b) == 0 && err == io.EOF {
				return nil, io.EOF
			}
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		s.br.Discard(n) // cannot fail: the bytes are buffered
		s.n += int64(n)
		return b, nil
	}
	s.big = grow(s.big, n)
	m, err := io.ReadFull(s.br, s.big)
	s.n += int64(m)
	if err != nil {
		return nil, err
	}
	return s.big, nil
}

// read fills b with the next len(b) bytes, with next's errors.
func (s *source) read(b []byte) error {
	d, err := s.next(len(b))
	if err != nil {
		return err
	}
	copy(b, d)
	return nil
}

// grow returns buf with length n, reusing its storage when it can.
func grow(buf []byte, n int) []byte {
	if cap(buf) >= n {
		return buf[:n]
	}
	return make([]byte, n, n+n/4)
}

// IsCapture reports whether the file at path starts like a pcap or pcapng
// file (possibly gzip-compressed); "-" (stdin) is assumed to be one.
func IsCapture(path string) bool {
	if path == "-" {
		return true
	}
	r, err := Open(path)
	if err != nil {
		return false
	}
	r.Close()
	return true
}
