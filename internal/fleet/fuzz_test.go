package fleet

import (
	"testing"

	"github.com/nats-io/nats.go"
)

// FuzzDecode: a record message is untrusted bytes from the broker; Decode
// must return an error for garbage, never panic, and what it accepts must
// survive a round trip.
func FuzzDecode(f *testing.F) {
	for _, c := range scenario(0, 4) {
		f.Add(Encode(c, "h", 16).Data)
	}
	f.Add([]byte(`{"ts":"2026-11-23T10:00:00Z","uid":"C1","id.orig_h":"10.0.0.1","id.orig_p":1,"id.resp_h":"::1","id.resp_p":2,"proto":"udp"}`))
	f.Add([]byte(`{"ts":1e400}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, host, err := Decode(&nats.Msg{Subject: "tcpsentry.conn.1.2.h", Data: data, Header: nats.Header{}})
		if err != nil {
			return
		}
		if host != "h" {
			t.Fatalf("host %q", host)
		}
		c2, _, err := Decode(Encode(c, "h", 16))
		if err != nil {
			t.Fatalf("re-encoded record does not decode: %v", err)
		}
		if c2.UID != c.UID || c2.Orig != c.Orig || c2.Resp != c.Resp || c2.Proto != c.Proto {
			t.Fatalf("round trip changed the record: %+v → %+v", c, c2)
		}
	})
}
