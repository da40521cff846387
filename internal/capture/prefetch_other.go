//go:build !amd64 && !arm64

package capture

func prefetch(*byte) {}
