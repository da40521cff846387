// Command floodgen writes a capture of a SYN flood from random spoofed
// sources at one target, for measuring that tcpsentry's memory stays flat
// under it (bench/flood.sh).
package main

import (
	"bufio"
	"encoding/binary"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
)

func main() {
	out := flag.String("o", "bench/out/flood-1M.pcap", "output pcap")
	packets := flag.Int("packets", 1_000_000, "SYNs to write")
	rate := flag.Int("rate", 50_000, "packets per second of capture time")
	seed := flag.Uint64("seed", 1, "random seed")
	flag.Parse()
	if err := run(*out, *packets, *rate, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "floodgen:", err)
		os.Exit(1)
	}
}

func run(path string, packets, rate int, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	w, err := capture.NewWriter(bw, capture.LinkRaw)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	t0 := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	step := time.Second / time.Duration(rate)
	b := make([]byte, 40)
	for i := range packets {
		clear(b)
		b[0] = 0x45
		binary.BigEndian.PutUint16(b[2:], 40)
		b[8], b[9] = 64, 6
		// Random source outside 10/8, the target 10.0.0.5:80.
		binary.BigEndian.PutUint32(b[12:], rng.Uint32()|0x80000000)
		copy(b[16:20], []byte{10, 0, 0, 5})
		binary.BigEndian.PutUint16(b[20:], uint16(rng.Uint32()))
		binary.BigEndian.PutUint16(b[22:], 80)
		binary.BigEndian.PutUint32(b[24:], rng.Uint32())
		b[32], b[33] = 5<<4, 0x02
		binary.BigEndian.PutUint16(b[34:], 512)
		if err := w.WritePacket(t0.Add(time.Duration(i)*step), b, 0); err != nil {
			return err
		}
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return f.Close()
}
