package model

import "testing"

func TestSYNOptions(t *testing.T) {
	cases := []struct {
		name string
		opts []byte
		want string
	}{
		{"nmap raw SYN", []byte{2, 4, 5, 0xb4}, "mss"},
		{"linux connect", []byte{2, 4, 0xff, 0xd7, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7}, "mss,ws,sackok,ts"},
		{"windows connect", []byte{2, 4, 5, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2}, "mss,ws,sackok"},
		{"no options", nil, "none"},
		{"end of list stops", []byte{2, 4, 5, 0xb4, 0, 3, 3, 7}, "mss"},
		{"unknown kind", []byte{30, 4, 0, 0}, "other"},
		{"length past the end", []byte{2, 4, 5, 0xb4, 8, 10, 0}, "mss,other"},
		{"zero length", []byte{3, 0, 1, 1}, "other"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := ParseSYNOptionKinds(tc.opts)
			if got := o.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
			back, ok := ParseSYNOptions(o.String())
			if !ok || back != o {
				t.Errorf("round trip %q: %v %v", o, back, ok)
			}
		})
	}
	if SYNOptions(0).String() != "" || (SYNSeen | OptMSS).KernelStack() || !(SYNSeen | OptTimestamp).KernelStack() {
		t.Error("zero value or KernelStack wrong")
	}
	if _, ok := ParseSYNOptions("mss,bogus"); ok {
		t.Error("bogus option name accepted")
	}
}

// FuzzParseSYNOptionKinds: any options bytes parse without panic, and the
// result's string form parses back to it.
func FuzzParseSYNOptionKinds(f *testing.F) {
	f.Add([]byte{2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7})
	f.Add([]byte{1, 1, 1})
	f.Add([]byte{8, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		o := ParseSYNOptionKinds(b)
		if back, ok := ParseSYNOptions(o.String()); !ok || back != o {
			t.Fatalf("%x: %v does not round trip (%v %v)", b, o, back, ok)
		}
	})
}
