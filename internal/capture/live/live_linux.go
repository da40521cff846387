package live

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/tcpsentry/tcpsentry/internal/capture"
	"github.com/tcpsentry/tcpsentry/internal/capture/filter"
	"github.com/tcpsentry/tcpsentry/internal/host/netlink"
)

// Offsets in struct tpacket_block_desc (its tpacket_hdr_v1 starts at 8)
// and struct tpacket3_hdr, linux/if_packet.h.
const (
	blkStatus     = 8
	blkNumPkts    = 12
	blkFirstPkt   = 16
	pktNextOffset = 0
	pktSec        = 4
	pktNsec       = 8
	pktSnaplen    = 12
	pktLen        = 16
	pktMac        = 24
	// The struct sockaddr_ll that follows the header (at
	// TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) = 48): its sll_pkttype.
	pktSllPkttype = 48 + 10
)

// Source reads frames from AF_PACKET rings. Poll must not be called
// concurrently with itself or Close; Stats may be called from any
// goroutine.
type Source struct {
	opts    Options
	handles []*handle
	fds     []unix.PollFd // the rings, then the wake-up eventfd
	wake    int           // eventfd written when a Poll's context ends
	pkt     capture.Packet
	next    int // handle to read first, so no interface starves the others

	mu    sync.Mutex
	stats Stats // kernel counters so far (PACKET_STATISTICS resets on read)
	deliv atomic.Uint64
}

// handle is one interface's socket and ring.
type handle struct {
	iface Interface
	idx   int // position in Options.Interfaces (capture.Packet.Iface)
	fd    int
	ring  []byte
	bsize int
	nblk  int
	cur   int  // next block to read
	lo    bool // loopback: skip outgoing copies, the kernel loops each frame back in
}

// Open opens a socket and ring on each interface. Close releases them.
func Open(opts Options) (*Source, error) {
	opts.defaults()
	if len(opts.Interfaces) == 0 {
		return nil, errors.New("live capture: no interface given")
	}
	if pg := os.Getpagesize(); opts.BlockSize%pg != 0 || opts.BlockSize&(opts.BlockSize-1) != 0 {
		return nil, fmt.Errorf("live capture: block size %d is not a power of two multiple of the page size (%d)", opts.BlockSize, pg)
	}
	s := &Source{opts: opts, wake: -1}
	open := func() error {
		for i, name := range opts.Interfaces {
			h, err := openHandle(&opts, i, name)
			if err != nil {
				return err
			}
			s.handles = append(s.handles, h)
		}
		return nil
	}
	var err error
	if opts.Netns != "" {
		err = netlink.InNetns(opts.Netns, open)
	} else {
		err = open()
	}
	if err != nil {
		s.Close()
		return nil, err
	}
	if s.wake, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		s.Close()
		return nil, fmt.Errorf("live capture: %w", os.NewSyscallError("eventfd", err))
	}
	for _, h := range s.handles {
		s.fds = append(s.fds, unix.PollFd{Fd: int32(h.fd), Events: unix.POLLIN | unix.POLLERR})
	}
	s.fds = append(s.fds, unix.PollFd{Fd: int32(s.wake), Events: unix.POLLIN})
	return s, nil
}

func openHandle(opts *Options, idx int, name string) (h *handle, err error) {
	where := "live capture on " + name
	if opts.Netns != "" {
		where += " in netns " + opts.Netns
	}
	fail := func(op string, err error) error {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
			return fmt.Errorf("%s: %w: %w", where, ErrPermission, os.NewSyscallError(op, err))
		}
		return fmt.Errorf("%s: %w", where, os.NewSyscallError(op, err))
	}
	// Protocol 0: the socket receives nothing until bind names one, so the
	// filter and ring are in place before the first frame arrives.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fail("socket", err)
	}
	hh := &handle{idx: idx, fd: fd, bsize: opts.BlockSize, nblk: opts.Blocks}
	defer func() {
		if err != nil {
			hh.close()
		}
	}()
	h = hh
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFINDEX, ifr); err != nil {
		if errors.Is(err, unix.ENODEV) {
			return nil, fmt.Errorf("%s: no such interface", where)
		}
		return nil, fail("ioctl SIOCGIFINDEX", err)
	}
	h.iface = Interface{Name: name, Index: int(ifr.Uint32())}
	ifr, _ = unix.NewIfreq(name)
	if err := unix.IoctlIfreq(fd, unix.SIOCGIFHWADDR, ifr); err != nil {
		return nil, fail("ioctl SIOCGIFHWADDR", err)
	}
	switch hw := ifr.Uint16(); hw { // sa_family of ifr_hwaddr: the ARPHRD_ type
	case unix.ARPHRD_ETHER:
		h.iface.Link = capture.LinkEthernet
	case unix.ARPHRD_LOOPBACK:
		// Linux's loopback frames carry an Ethernet header of zero MACs.
		h.iface.Link, h.lo = capture.LinkEthernet, true
	case unix.ARPHRD_NONE, unix.ARPHRD_TUNNEL, unix.ARPHRD_TUNNEL6, unix.ARPHRD_IPGRE, unix.ARPHRD_SIT:
		h.iface.Link = capture.LinkRaw
	default:
		return nil, fmt.Errorf("%s: interface hardware type %d (ARPHRD_*) is not supported; ethernet, loopback and raw-IP (tun) interfaces are", where, hw)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
		return nil, fail("setsockopt PACKET_VERSION", err)
	}
	if opts.Filter != "" {
		prog, err := filter.Compile(opts.Filter, h.iface.Link)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		ins := make([]unix.SockFilter, len(prog.Raw))
		for i, r := range prog.Raw {
			ins[i] = unix.SockFilter{Code: r.Op, Jt: r.Jt, Jf: r.Jf, K: r.K}
		}
		fp := unix.SockFprog{Len: uint16(len(ins)), Filter: &ins[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &fp); err != nil {
			return nil, fail("setsockopt SO_ATTACH_FILTER", err)
		}
	}
	const frameSize = 2048 // TPACKET_V3 packs frames of any size; this only sizes frame_nr
	req := unix.TpacketReq3{
		Block_size:     uint32(opts.BlockSize),
		Block_nr:       uint32(opts.Blocks),
		Frame_size:     frameSize,
		Frame_nr:       uint32(opts.BlockSize / frameSize * opts.Blocks),
		Retire_blk_tov: uint32(max(1, opts.BlockTimeout.Milliseconds())),
	}
	if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
		return nil, fail("setsockopt PACKET_RX_RING", err)
	}
	h.ring, err = unix.Mmap(fd, 0, opts.BlockSize*opts.Blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_LOCKED)
	if err != nil {
		// MAP_LOCKED fails beyond RLIMIT_MEMLOCK; the ring works unlocked.
		h.ring, err = unix.Mmap(fd, 0, opts.BlockSize*opts.Blocks, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			return nil, fail("mmap", err)
		}
	}
	sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: h.iface.Index}
	if err := unix.Bind(fd, sa); err != nil {
		return nil, fail("bind", err)
	}
	if opts.Promiscuous {
		mr := unix.PacketMreq{Ifindex: int32(h.iface.Index), Type: unix.PACKET_MR_PROMISC}
		if err := unix.SetsockoptPacketMreq(fd, unix.SOL_PACKET, unix.PACKET_ADD_MEMBERSHIP, &mr); err != nil {
			return nil, fail("setsockopt PACKET_ADD_MEMBERSHIP", err)
		}
	}
	if opts.Fanout != 0 {
		id := int(opts.Fanout) + idx // a fanout group spans one interface
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_FANOUT, (id&0xffff)|unix.PACKET_FANOUT_HASH<<16); err != nil {
			return nil, fail("setsockopt PACKET_FANOUT", err)
		}
	}
	return h, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// Interfaces lists the interfaces read, in Options order.
func (s *Source) Interfaces() []Interface {
	out := make([]Interface, len(s.handles))
	for i, h := range s.handles {
		out[i] = h.iface
	}
	return out
}

// status returns the address of a block's block_status, which the kernel
// and we hand back and forth.
func (h *handle) status(b int) *uint32 {
	return (*uint32)(unsafe.Pointer(&h.ring[b*h.bsize+blkStatus]))
}

// Poll hands every frame that is ready to fn, waiting up to wait for the
// first if none is. It returns the number of frames delivered; 0 means
// wait passed (or ctx ended) in silence. A packet's Data points into the
// ring and is valid only during the call to fn. Poll returns ctx's error
// promptly when ctx ends, even while waiting.
func (s *Source) Poll(ctx context.Context, wait time.Duration, fn func(*capture.Packet)) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if n := s.drain(fn); n > 0 {
		return n, nil
	}
	defer wakeOnDone(ctx, s.wake)()
	ms := int(max(wait, 0).Milliseconds()) // never -1: that would wait forever
	if wait > 0 && ms == 0 {
		ms = 1
	}
	for {
		_, err := unix.Poll(s.fds, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("live capture: %w", os.NewSyscallError("poll", err))
		}
		break
	}
	if s.fds[len(s.fds)-1].Revents != 0 {
		var buf [8]byte
		_, _ = unix.Read(s.wake, buf[:])
	}
	for i := range s.fds[:len(s.fds)-1] {
		if s.fds[i].Revents&unix.POLLERR != 0 {
			// A pending socket error (e.g. ENETDOWN when the interface
			// went away): read it to clear it and report it.
			if e, gerr := unix.GetsockoptInt(int(s.fds[i].Fd), unix.SOL_SOCKET, unix.SO_ERROR); gerr == nil && e != 0 {
				return 0, fmt.Errorf("live capture on %s: %w", s.handles[i].iface.Name, unix.Errno(e))
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return s.drain(fn), nil
}

// drain delivers the blocks that are ready, at most one ring's worth per
// interface, starting with a different interface each time.
func (s *Source) drain(fn func(*capture.Packet)) int {
	n := 0
	for k := range s.handles {
		h := s.handles[(s.next+k)%len(s.handles)]
		for range h.nblk {
			st := h.status(h.cur)
			if atomic.LoadUint32(st)&unix.TP_STATUS_USER == 0 {
				break
			}
			n += s.block(h, h.ring[h.cur*h.bsize:(h.cur+1)*h.bsize], fn)
			atomic.StoreUint32(st, unix.TP_STATUS_KERNEL)
			h.cur = (h.cur + 1) % h.nblk
		}
	}
	s.next++
	s.deliv.Add(uint64(n))
	return n
}

// block walks one block's frames. The kernel wrote the offsets; they are
// still checked, so a bad one ends the block instead of reading outside it.
func (s *Source) block(h *handle, b []byte, fn func(*capture.Packet)) int {
	ne := binary.NativeEndian
	num := int(ne.Uint32(b[blkNumPkts:]))
	off := int(ne.Uint32(b[blkFirstPkt:]))
	p := &s.pkt
	n := 0
	for i := 0; i < num; i++ {
		if off < 0 || off+pktSllPkttype+1 > len(b) {
			break
		}
		f := b[off:]
		next := int(ne.Uint32(f[pktNextOffset:]))
		mac := int(ne.Uint16(f[pktMac:]))
		snap := int(ne.Uint32(f[pktSnaplen:]))
		if mac+snap <= len(f) && !(h.lo && f[pktSllPkttype] == unix.PACKET_OUTGOING) {
			*p = capture.Packet{
				Time:    time.Unix(int64(ne.Uint32(f[pktSec:])), int64(ne.Uint32(f[pktNsec:]))),
				Data:    f[mac : mac+snap : mac+snap],
				WireLen: int(ne.Uint32(f[pktLen:])),
				Link:    h.iface.Link,
				Iface:   h.idx,
			}
			fn(p)
			n++
		}
		if next == 0 {
			break
		}
		off += next
	}
	return n
}

// Stats returns the cumulative counters. Each call reads (and so resets)
// the kernel's counters and adds them to the totals.
func (s *Source) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.handles {
		if h.fd < 0 {
			continue
		}
		st, err := unix.GetsockoptTpacketStatsV3(h.fd, unix.SOL_PACKET, unix.PACKET_STATISTICS)
		if err != nil {
			continue // closed meanwhile; the totals so far stand
		}
		s.stats.Packets += uint64(st.Packets)
		s.stats.Drops += uint64(st.Drops)
		s.stats.FreezeQueue += uint64(st.Freeze_q_cnt)
	}
	out := s.stats
	out.Delivered = s.deliv.Load()
	return out
}

// Close unmaps the rings and closes the sockets. Poll must have returned.
func (s *Source) Close() error {
	s.Stats() // keep the last counters
	s.mu.Lock()
	defer s.mu.Unlock()
	var errs []error
	for _, h := range s.handles {
		errs = append(errs, h.close())
	}
	s.handles = nil
	if s.wake >= 0 {
		errs = append(errs, unix.Close(s.wake))
		s.wake = -1
	}
	return errors.Join(errs...)
}

func (h *handle) close() error {
	var errs []error
	if h.ring != nil {
		errs = append(errs, unix.Munmap(h.ring))
		h.ring = nil
	}
	if h.fd >= 0 {
		errs = append(errs, unix.Close(h.fd))
		h.fd = -1
	}
	return errors.Join(errs...)
}

// wakeOnDone writes to the eventfd when ctx ends, so that a poll on it
// returns. The function it returns cancels that, and waits for a write
// already under way: once it returns, the eventfd may be closed safely.
func wakeOnDone(ctx context.Context, fd int) (release func()) {
	done := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(done)
		var one [8]byte
		binary.NativeEndian.PutUint64(one[:], 1)
		_, _ = unix.Write(fd, one[:])
	})
	return func() {
		if !stop() {
			<-done
		}
	}
}
