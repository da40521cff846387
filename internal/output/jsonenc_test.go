package output

import (
	"strconv"
	"testing"
)

func TestAppendThousandths(t *testing.T) {
	for _, n := range []int64{0, 1, 8, 10, 100, 999, 1000, 1001, 1500, 12345, 11525250, -1500, -7} {
		got := string(appendThousandths(nil, n))
		want := strconv.FormatFloat(float64(n)/1000, 'f', -1, 64)
		if got != want {
			t.Errorf("appendThousandths(%d) = %s, want %s", n, got, want)
		}
	}
}
