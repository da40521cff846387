package capture

import (
	"fmt"
	"io"
	"os"
	"syscall"
)

// mapping reads a regular file through a window of memory mapped from it,
// sliding forward as the file is read. Records are handed out in place:
// nothing is copied from the page cache, and only the bytes the decoders
// look at are loaded at all.
type mapping struct {
	f    *os.File
	size int64  // the file's size, as last seen
	win  []byte // mapped window, nil before the first read
	off  int64  // file offset of win[0]
	pos  int    // next unread byte of win
}

// newMapping returns a mapping of f when f is a regular, uncompressed file
// of at least a file header's size; otherwise nil (read it with a Reader).
func newMapping(f *os.File) *mapping {
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() || fi.Size() < 24 {
		return nil
	}
	var head [2]byte
	if _, err := f.ReadAt(head[:], 0); err != nil || head[0] == 0x1f && head[1] == 0x8b {
		return nil // gzip, or unreadable: the buffered path reports it
	}
	return &mapping{f: f, size: fi.Size()}
}

func (m *mapping) offset() int64 { return m.off + int64(m.pos) }

// next is source.next for a mapped file.
func (m *mapping) next(n int) ([]byte, error) {
	if n <= len(m.win)-m.pos {
		b := m.win[m.pos : m.pos+n : m.pos+n]
		m.pos += n
		if m.pos+128 <= len(m.win) {
			// The next record (or this record's data) is what the
			// caller asks for next: start loading it now.
			prefetch(&m.win[m.pos])
		}
		return b, nil
	}
	return m.slide(n)
}

// slide maps the window that holds the next n bytes.
func (m *mapping) slide(n int) ([]byte, error) {
	at := m.offset()
	if at+int64(n) > m.size {
		// The file may have grown since (a capture still being written).
		if fi, err := m.f.Stat(); err == nil {
			m.size = fi.Size()
		}
	}
	if at+int64(n) > m.size {
		// Consume what is left, as io.ReadFull would.
		m.unmap()
		m.off, m.pos = max(at, m.size), 0
		if at >= m.size {
			return nil, io.EOF
		}
		return nil, io.ErrUnexpectedEOF
	}
	base := at &^ int64(os.Getpagesize()-1)
	length := min(max(mapWindow, at-base+int64(n)), m.size-base)
	b, err := syscall.Mmap(int(m.f.Fd()), base, int(length), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap: %w", err)
	}
	// Read-ahead for a sequential scan; a failure only costs speed.
	_ = syscall.Madvise(b, syscall.MADV_SEQUENTIAL)
	m.unmap()
	m.win, m.off, m.pos = b, base, int(at-base)
	return m.next(n)
}

func (m *mapping) unmap() {
	if m.win != nil {
		_ = syscall.Munmap(m.win)
		m.win = nil
	}
}

// Close unmaps the window; the caller closes the file.
func (m *mapping) Close() error {
	m.unmap()
	return nil
}
