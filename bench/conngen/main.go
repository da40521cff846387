// Command conngen writes a large, deterministic Zeek conn.log (TSV) for
// bench/detect.sh: a day of ordinary traffic from many clients to many
// servers (web, DNS, mail, SSH, from internal/connsim), with planted
// beacons (jittered check-ins) and one large upload among it, in time
// order as Zeek writes it.
//
//	go run ./bench/conngen -n 10000000 -o bench/out/conn-10M.log
//
// The same -seed and flags always give the same file.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/connsim"
	"github.com/tcpsentry/tcpsentry/internal/model"
	"github.com/tcpsentry/tcpsentry/internal/zeeklog"
)

func main() {
	n := flag.Int("n", 1_000_000, "records to write")
	out := flag.String("o", "-", "output file (- is stdout)")
	seed := flag.Uint64("seed", 1, "random seed")
	clients := flag.Int("clients", 5000, "client addresses (10.x)")
	servers := flag.Int("servers", 2000, "server addresses")
	beacons := flag.Int("beacons", 20, "planted beacons (every 60 s ±20%)")
	flag.Parse()
	if err := run(*n, *out, *seed, *clients, *servers, *beacons); err != nil {
		fmt.Fprintln(os.Stderr, "conngen:", err)
		os.Exit(1)
	}
}

func run(n int, out string, seed uint64, nc, ns, nb int) error {
	w := os.Stdout
	if out != "-" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := zeeklog.NewTSVWriter(bw)
	g := connsim.New(seed)
	clients := make([]netip.Addr, nc)
	for i := range clients {
		clients[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	servers := make([]netip.Addr, ns)
	for i := range servers {
		if i%4 == 0 {
			servers[i] = netip.AddrFrom4([4]byte{10, 200, byte(i >> 8), byte(i)})
		} else {
			servers[i] = netip.AddrFrom4([4]byte{203, byte(i >> 16), byte(i >> 8), byte(i)})
		}
	}
	span := 24 * time.Hour
	step := span / time.Duration(max(n, 1))
	type beacon struct {
		src, dst netip.Addr
		next     time.Time
	}
	bs := make([]beacon, nb)
	for i := range bs {
		bs[i] = beacon{clients[g.Rand().IntN(nc)], netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), connsim.Start.Add(time.Duration(g.Rand().IntN(60)) * time.Second)}
	}
	upload := connsim.Start.Add(span / 2)
	written := 0
	write := func(c *model.Conn) error {
		written++
		return tw.Write(c)
	}
	for i := 0; written < n; i++ {
		t := connsim.Start.Add(time.Duration(i) * step)
		for k := range bs {
			if b := &bs[k]; !b.next.After(t) && written < n {
				c := g.Conn(b.next, b.src, b.dst, 443, model.ProtoTCP, 200*time.Millisecond, 400, 120)
				if err := write(&c); err != nil {
					return err
				}
				b.next = b.next.Add(time.Duration(float64(time.Minute) * (0.8 + 0.4*g.Rand().Float64())))
			}
		}
		if !upload.After(t) && !upload.IsZero() && written < n {
			c := g.Conn(upload, clients[1], netip.MustParseAddr("198.51.100.250"), 443, model.ProtoTCP, 20*time.Minute, 200_000_000, 100_000)
			if err := write(&c); err != nil {
				return err
			}
			upload = time.Time{}
		}
		if written < n {
			c := g.MixOne(clients, servers, t)
			if err := write(&c); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return bw.Flush()
}
