package flow

import (
	"io"
	"os"
	"testing"

	"github.com/tcpsentry/tcpsentry/internal/capture"
)

func BenchmarkZZCapture(b *testing.B) {
	path := os.Getenv("ZZPCAP")
	if path == "" {
		b.Skip()
	}
	r, err := capture.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	var pkts []capture.Packet
	var p capture.Packet
	for len(pkts) < 1_000_000 {
		if err := r.Next(&p); err == io.EOF {
			break
		}
		q := p
		q.Data = append([]byte(nil), p.Data...)
		pkts = append(pkts, q)
	}
	r.Close()
	b.ResetTimer()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tr := NewTracker(Options{}, nil)
		for j := range pkts {
			tr.Packet(&pkts[j])
		}
		tr.Flush()
	}
	b.ReportMetric(float64(b.N*len(pkts))/b.Elapsed().Seconds()/1e6, "Mpps")
}
