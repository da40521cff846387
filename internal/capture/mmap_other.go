//go:build !linux

package capture

import "os"

// mapping is only implemented on Linux; elsewhere files are read with a
// buffered reader.
type mapping struct{}

func newMapping(*os.File) *mapping { return nil }

func (*mapping) offset() int64            { return 0 }
func (*mapping) next(int) ([]byte, error) { return nil, nil }
func (*mapping) Close() error             { return nil }
