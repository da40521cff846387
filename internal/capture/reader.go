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

// Packet is one captured frame. Data is owned by the Reader and is valid
// only until the next call to Next: copy what must outlive it.
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
	br     *countingReader
	f      format
	closer []io.Closer
	done   bool
}

// Open opens a capture file; "-" reads standard input. gzip compression is
// detected from the content, not the name.
func Open(path string) (*Reader, error) {
	if path == "-" {
		return NewReader(os.Stdin, "-")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
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
	rd := &Reader{name: name}
	b := bufio.NewReaderSize(r, 1<<16)
	head, err := b.Peek(4)
	if err != nil && len(head) < 2 {
		return nil, &Error{File: name, Field: "magic", Err: fmt.Errorf("%w: file too short", ErrNotCapture), Fatal: true}
	}
	var src io.Reader = b
	if head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(b)
		if err != nil {
			return nil, &Error{File: name, Field: "gzip header", Err: err, Fatal: true}
		}
		rd.closer = append(rd.closer, zr)
		src = bufio.NewReaderSize(zr, 1<<16)
	}
	rd.br = &countingReader{r: src}
	var magic [4]byte
	if _, err := io.ReadFull(rd.br, magic[:]); err != nil {
		return nil, &Error{File: name, Field: "magic", Err: fmt.Errorf("%w: %v", ErrNotCapture, err), Fatal: true}
	}
	switch {
	case binary.LittleEndian.Uint32(magic[:]) == ngBlockSHB:
		ng, err := newNG(rd.br, name)
		if err != nil {
			return nil, err
		}
		rd.f = ng
	default:
		pc, err := newPcap(rd.br, name, magic)
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
func (r *Reader) Offset() int64 { return r.br.n }

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

// countingReader counts consumed bytes, for offsets in errors.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// readFull reads exactly len(b) bytes; a partial read at the end of the
// stream is io.ErrUnexpectedEOF, none at all io.EOF.
func readFull(r io.Reader, b []byte) error {
	_, err := io.ReadFull(r, b)
	return err
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
