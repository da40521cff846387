package capture

import (
	"encoding/binary"
	"errors"
	"io"
	"time"
)

// Writer writes classic little-endian pcap with nanosecond timestamps. Tests
// use it to craft captures; it is also fine for exporting packets.
type Writer struct {
	w       io.Writer
	link    LinkType
	snaplen uint32
	hdr     [16]byte
}

// NewWriter writes the file header for link type lt and returns a Writer.
func NewWriter(w io.Writer, lt LinkType) (*Writer, error) {
	pw := &Writer{w: w, link: lt, snaplen: 262144}
	var h [24]byte
	binary.LittleEndian.PutUint32(h[0:4], pcapMagicNano)
	binary.LittleEndian.PutUint16(h[4:6], 2)
	binary.LittleEndian.PutUint16(h[6:8], 4)
	binary.LittleEndian.PutUint32(h[16:20], pw.snaplen)
	binary.LittleEndian.PutUint32(h[20:24], uint32(lt))
	if _, err := w.Write(h[:]); err != nil {
		return nil, err
	}
	return pw, nil
}

// WritePacket writes one frame captured at t; wireLen 0 means len(data).
func (pw *Writer) WritePacket(t time.Time, data []byte, wireLen int) error {
	if len(data) > int(pw.snaplen) {
		return errors.New("capture: packet longer than snaplen")
	}
	if wireLen < len(data) {
		wireLen = len(data)
	}
	ns := t.UnixNano()
	binary.LittleEndian.PutUint32(pw.hdr[0:4], uint32(ns/1e9))
	binary.LittleEndian.PutUint32(pw.hdr[4:8], uint32(ns%1e9))
	binary.LittleEndian.PutUint32(pw.hdr[8:12], uint32(len(data)))
	binary.LittleEndian.PutUint32(pw.hdr[12:16], uint32(wireLen))
	if _, err := pw.w.Write(pw.hdr[:]); err != nil {
		return err
	}
	_, err := pw.w.Write(data)
	return err
}
