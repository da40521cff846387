// Command connholder holds many ESTABLISHED loopback TCP connections open so
// that bench/conns.sh can time socket-listing tools against a known socket
// count. It is a benchmark fixture, not part of tcpsentry.
//
// A holder optionally listens (-listen) and accepts exactly -accept
// connections, and dials -n connections to -dial (default: its own listener).
// bench/conns.sh arranges holders in a ring: holder i listens on port P+i and
// dials holder i+1, so every process owns a mix of client and server ends,
// each belonging to a connection whose other end is in another process.
//
// Every end writes a few bytes that are never read, so both ends of every
// connection are ESTABLISHED with a non-empty receive queue. When all of its
// connections are established the holder prints "ready D A" (dialled,
// accepted) on stdout, then blocks until stdin reaches EOF, SIGTERM/SIGINT,
// or -max-lifetime passes. Everything it does is bounded in time.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// fdSlack is the number of descriptors kept free for the runtime, the
// listener and stdio when checking the open-file limit.
const fdSlack = 64

var payload = []byte("tcpsntry")

func main() {
	listen := flag.String("listen", "", "address to listen on and accept -accept connections (e.g. 127.0.0.1:61000)")
	accept := flag.Int("accept", -1, "connections to accept on -listen (default: -n when dialling our own listener, else 0)")
	dial := flag.String("dial", "", "address to dial -n connections to (default: -listen)")
	n := flag.Int("n", 0, "connections to dial")
	conc := flag.Int("concurrency", 32, "dials in flight")
	setup := flag.Duration("setup-timeout", 2*time.Minute, "give up if not all connections are established by then")
	maxLife := flag.Duration("max-lifetime", 10*time.Minute, "exit after this long even if stdin stays open")
	ignoreStdin := flag.Bool("ignore-stdin", false, "do not exit on stdin EOF (use only with a short -max-lifetime)")
	flag.Parse()

	if err := run(*listen, *dial, *n, *accept, *conc, *setup, *maxLife, !*ignoreStdin); err != nil {
		fmt.Fprintln(os.Stderr, "connholder:", err)
		os.Exit(1)
	}
}

func run(listen, dial string, n, accept, conc int, setup, maxLife time.Duration, watchStdin bool) error {
	if dial == "" {
		dial = listen
		if accept < 0 {
			accept = n
		}
	}
	if accept < 0 {
		accept = 0
	}
	if dial == "" && n > 0 {
		return errors.New("-n needs -dial or -listen")
	}
	if accept > 0 && listen == "" {
		return errors.New("-accept needs -listen")
	}
	if n < 0 || conc < 1 {
		return errors.New("-n must be >= 0 and -concurrency >= 1")
	}
	limit, err := raiseNoFile()
	if err != nil {
		return err
	}
	if need := uint64(n+accept) + fdSlack; need > limit {
		return fmt.Errorf("need %d descriptors for %d dialled + %d accepted sockets, RLIMIT_NOFILE is %d: use more processes",
			need, n, accept, limit)
	}

	// Stop on signal, stdin EOF or the lifetime bound; the same context
	// aborts set-up if the harness gives up early.
	ctx, cancel := context.WithTimeout(context.Background(), maxLife)
	defer cancel()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP)
	go func() {
		select {
		case <-sigs:
			cancel()
		case <-ctx.Done():
		}
	}()
	if watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			cancel()
		}()
	}

	var (
		mu    sync.Mutex
		conns = make([]net.Conn, 0, n+accept) // keeps every socket open
	)
	keep := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}

	setupCtx, setupCancel := context.WithTimeout(ctx, setup)
	defer setupCancel()

	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		accepted atomic.Int64
	)
	fail := func(err error) { // first error wins and aborts set-up
		errOnce.Do(func() { firstErr = err; setupCancel() })
	}

	if listen != "" {
		// No keepalive: idle probes on 100k sockets would be background noise.
		lc := net.ListenConfig{KeepAlive: -1}
		ln, err := lc.Listen(context.Background(), "tcp4", listen)
		if err != nil {
			return err
		}
		defer ln.Close()
		go func() { <-setupCtx.Done(); _ = ln.(*net.TCPListener).SetDeadline(time.Now()) }()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for accepted.Load() < int64(accept) {
				c, err := ln.Accept()
				if err != nil {
					fail(fmt.Errorf("accept after %d of %d: %w", accepted.Load(), accept, err))
					return
				}
				if _, err := c.Write(payload); err != nil {
					fail(fmt.Errorf("write on accepted: %w", err))
					return
				}
				keep(c)
				accepted.Add(1)
			}
		}()
	}

	var dialled atomic.Int64
	if n > 0 {
		jobs := make(chan struct{})
		for w := 0; w < conc && w < n; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range jobs {
					c, err := dialRetry(setupCtx, dial)
					if err != nil {
						fail(fmt.Errorf("dial %s after %d of %d: %w", dial, dialled.Load(), n, err))
						return
					}
					if _, err := c.Write(payload); err != nil {
						fail(fmt.Errorf("write on dialled: %w", err))
						return
					}
					keep(c)
					dialled.Add(1)
				}
			}()
		}
	feed:
		for i := 0; i < n; i++ {
			select {
			case jobs <- struct{}{}:
			case <-setupCtx.Done():
				break feed
			}
		}
		close(jobs)
	}

	// Every worker returns once its work is done or set-up is cancelled
	// (the listener deadline and the dial context both follow setupCtx).
	wg.Wait()
	if ctx.Err() != nil {
		return fmt.Errorf("stopped during set-up (stdin EOF, signal or -max-lifetime): dialled %d of %d, accepted %d of %d",
			dialled.Load(), n, accepted.Load(), accept)
	}
	if firstErr != nil {
		return firstErr
	}
	if err := setupCtx.Err(); err != nil {
		return fmt.Errorf("set-up not finished: dialled %d of %d, accepted %d of %d: %w",
			dialled.Load(), n, accepted.Load(), accept, err)
	}
	if d, a := dialled.Load(), accepted.Load(); d != int64(n) || a != int64(accept) {
		return fmt.Errorf("set-up incomplete: dialled %d of %d, accepted %d of %d", d, n, a, accept)
	}
	fmt.Printf("ready %d %d\n", n, accept)
	_ = os.Stdout.Sync()

	<-ctx.Done()
	mu.Lock()
	for _, c := range conns {
		_ = c.Close()
	}
	mu.Unlock()
	return nil
}

// dialRetry dials addr, retrying while the peer's listener is not up yet
// (holders of a ring start in any order) or its backlog is momentarily full.
func dialRetry(ctx context.Context, addr string) (net.Conn, error) {
	d := net.Dialer{KeepAlive: -1}
	backoff := 5 * time.Millisecond
	for {
		c, err := d.DialContext(ctx, "tcp4", addr)
		if err == nil {
			return c, nil
		}
		if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ETIMEDOUT) &&
			!errors.Is(err, syscall.EAGAIN) {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		if backoff < 200*time.Millisecond {
			backoff *= 2
		}
	}
}

// raiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns it.
func raiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, fmt.Errorf("getrlimit: %w", err)
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, fmt.Errorf("setrlimit: %w", err)
		}
	}
	return rl.Cur, nil
}
