package detect

import (
	"math"
	"net/netip"
	"slices"
	"strings"

	"github.com/tcpsentry/tcpsentry/internal/model"
)

// Robust statistics shared by the traffic detectors. Medians and quartiles
// rather than means: one outlier (a retransmitted check-in, a large reply)
// must not move a score.

// quantileSorted is the q-quantile of sorted xs by linear interpolation.
func quantileSorted(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	pos := q * float64(len(xs)-1)
	lo := int(math.Floor(pos))
	hi := int(math.Ceil(pos))
	if lo == hi {
		return xs[lo]
	}
	return xs[lo] + (xs[hi]-xs[lo])*(pos-float64(lo))
}

// robust holds a sample's median, MAD and Bowley skew.
type robust struct {
	median, mad, skew float64
}

// describe sorts xs in place and returns its robust summary. Bowley's skew
// is (Q1+Q3-2·Q2)/(Q3-Q1), in [-1, 1]; it is 0 when the quartiles coincide
// (a constant sample), as RITA has it.
func describe(xs []float64) robust {
	if len(xs) == 0 {
		return robust{}
	}
	slices.Sort(xs)
	q1, q2, q3 := quantileSorted(xs, 0.25), quantileSorted(xs, 0.5), quantileSorted(xs, 0.75)
	r := robust{median: q2}
	if q3 > q1 && q2 != q1 && q2 != q3 {
		r.skew = (q1 + q3 - 2*q2) / (q3 - q1)
	}
	dev := make([]float64, len(xs))
	for i, x := range xs {
		dev[i] = math.Abs(x - q2)
	}
	slices.Sort(dev)
	r.mad = quantileSorted(dev, 0.5)
	return r
}

// dispersionScore is RITA's MAD-over-median score: 1 for no spread, 0 when
// the typical deviation is as large as the median itself.
func (r robust) dispersionScore() float64 {
	if r.median <= 0 {
		if r.mad == 0 {
			return 1
		}
		return 0
	}
	return clamp01(1 - r.mad/r.median)
}

// skewScore is 1 for a symmetric sample, 0 for a maximally skewed one.
func (r robust) skewScore() float64 { return clamp01(1 - math.Abs(r.skew)) }

func clamp01(x float64) float64 { return max(0, min(1, x)) }

// round3 keeps evidence readable.
func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// established reports whether a connection record is a completed
// conversation rather than a failed attempt: for TCP, the responder
// answered the SYN and the originator went on (Zeek history h then A or D),
// or, for logs without history, a conn_state only an established
// connection has. Other protocols count when the responder answered.
func established(c *model.Conn) bool {
	if c.Proto != model.ProtoTCP {
		return c.RespPkts > 0 || c.RespBytes > 0 || c.Proto == model.ProtoUDP && c.OrigBytes > 0
	}
	if c.Has(model.FieldHistory) && c.History != "" {
		h := strings.TrimPrefix(c.History, "^")
		return strings.ContainsRune(h, 'h') && strings.ContainsAny(h, "AD")
	}
	switch c.ConnState {
	case model.ConnSF, model.ConnS1, model.ConnS2, model.ConnS3, model.ConnRSTO, model.ConnRSTR:
		return true
	}
	return false
}

// unicastPeer reports whether the responder is one host: multicast and
// broadcast "connections" (SSDP, mDNS announcements) are one-way
// advertisements to whoever listens, not a channel to a peer.
func unicastPeer(c *model.Conn) bool {
	a := c.Resp.Addr().Unmap()
	return !a.IsMulticast() && a != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// origSize is the originator's bytes for size statistics: IP bytes when
// known (they include headers, as RITA uses), else payload bytes.
func origSize(c *model.Conn) uint64 {
	if c.Has(model.FieldOrigIPBytes) && c.OrigIPBytes > 0 {
		return c.OrigIPBytes
	}
	return c.OrigBytes
}

// isOpen reports whether a record describes a connection still open: the
// flow tracker's records at end of input, Zeek's open_conn.log (marked so
// by the reader's caller) and any other reason a tracker gives that is not
// an ending (a live source's in-progress update).
func isOpen(c *model.Conn) bool {
	switch c.End {
	case "", model.EndClosed, model.EndTimeout, model.EndEvicted:
		return false
	}
	return true
}

// Established is the detectors' definition of a completed conversation,
// for learners that must agree with them.
func Established(c *model.Conn) bool { return established(c) }
