//go:build !linux

package bpfiter

import (
	"context"
	"fmt"
)

// SocketFDs is Linux-only: BPF iterators exist nowhere else.
func SocketFDs(ctx context.Context) ([]FD, error) {
	return nil, fmt.Errorf("%w: not Linux", ErrUnavailable)
}
