//go:build !linux

package live

import (
	"context"
	"errors"
	"time"

	"github.com/tcpsentry/tcpsentry/internal/capture"
)

// Source is unavailable outside Linux.
type Source struct{}

// Open fails outside Linux: AF_PACKET is Linux's.
func Open(Options) (*Source, error) {
	return nil, errors.New("live capture is implemented for Linux (AF_PACKET) only")
}

func (s *Source) Poll(context.Context, time.Duration, func(*capture.Packet)) (int, error) {
	return 0, errors.ErrUnsupported
}
func (s *Source) Stats() Stats            { return Stats{} }
func (s *Source) Interfaces() []Interface { return nil }
func (s *Source) Close() error            { return nil }
