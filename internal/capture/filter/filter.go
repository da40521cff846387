// Package filter compiles pcap-filter expressions ("tcp port 80 and not
// host 10.0.0.1") into classic BPF programs, in pure Go, for the kernel to
// run on a capture socket (SO_ATTACH_FILTER) or for x/net/bpf's VM to run on
// packets from a file.
//
// It covers the common subset of pcap-filter(7): the protocols ip, ip6,
// arp, rarp, tcp, udp, sctp, icmp, icmp6 (alone or qualifying host, net,
// port and portrange); host, net (CIDR or an address), port, portrange,
// each with src or dst; ip proto N, ip6 proto N; vlan [ID]; less N and
// greater N; and, or, not (also &&, ||, !) and parentheses; a bare value
// after one of those takes its qualifiers ("port 80 or 443"). Anything else
// is an error that names the offending word and its offset, never a
// program that silently matches everything. The semantics are libpcap's
// (checked against tcpdump's own programs in the tests): "port" matches
// TCP, UDP and SCTP and skips IPv4 fragments after the first; an
// unqualified IPv4 "host" matches ARP and RARP addresses too; "tcp" over
// IPv6 looks through one fragment header.
//
// github.com/packetcap/go-pcap/filter was tried first: it compiles "icmp"
// and "portrange" to programs that accept every packet and rejects "vlan",
// so it is not used.
package filter

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"golang.org/x/net/bpf"

	"github.com/tcpsentry/tcpsentry/internal/capture"
)

// Snaplen is what an accepting program returns: the whole packet.
const Snaplen = 262144

// Program is a compiled filter.
type Program struct {
	Expr         string
	Instructions []bpf.Instruction
	Raw          []bpf.RawInstruction // what SO_ATTACH_FILTER takes
}

// Error is an expression that cannot be compiled: Offset is the byte
// offset of the word that was wrong in Expr.
type Error struct {
	Expr   string
	Offset int
	Msg    string
}

func (e *Error) Error() string {
	return fmt.Sprintf("filter %q: at offset %d: %s", e.Expr, e.Offset, e.Msg)
}

// Compile compiles expr for frames of link type lt: Ethernet (which is
// also what Linux's loopback device delivers) or raw IP. An empty
// expression compiles to a program that accepts everything.
//
// "vlan" tests the tag the Linux kernel keeps beside the frame (it strips
// tags from received frames before a capture socket sees them), so it is
// for live capture on Linux; the kernel's ancillary loads it uses do not
// run in x/net/bpf's VM.
func Compile(expr string, lt capture.LinkType) (*Program, error) {
	var l layout
	switch lt {
	case capture.LinkEthernet:
		l = layout{ether: true, off: 14}
	case capture.LinkRaw, capture.LinkIPv4, capture.LinkIPv6:
		l = layout{}
	default:
		return nil, &Error{Expr: expr, Msg: fmt.Sprintf("link type %s: only ethernet and raw IP are supported", lt)}
	}
	toks, err := lex(expr)
	if err != nil {
		return nil, err
	}
	p := &parser{expr: expr, toks: toks, l: l}
	var root node = constNode(true)
	if len(toks) > 0 {
		root, err = p.parseOr()
		if err != nil {
			return nil, err
		}
		if p.pos < len(p.toks) {
			return nil, p.errf("unexpected %q", p.toks[p.pos].s)
		}
	}
	ins, err := assemble(root)
	if err != nil {
		return nil, &Error{Expr: expr, Msg: err.Error()}
	}
	raw, err := bpf.Assemble(ins)
	if err != nil {
		return nil, &Error{Expr: expr, Msg: fmt.Sprintf("assembling: %v", err)}
	}
	return &Program{Expr: expr, Instructions: ins, Raw: raw}, nil
}

// Match runs the program on one frame in x/net/bpf's VM (for files and
// tests; a live socket has the kernel run it).
func (p *Program) Match(frame []byte) (bool, error) {
	vm, err := bpf.NewVM(p.Instructions)
	if err != nil {
		return false, err
	}
	n, err := vm.Run(frame)
	return n > 0, err
}

// layout says where the network layer starts.
type layout struct {
	ether bool   // an Ethernet type precedes the network layer
	off   uint32 // offset of the network layer
}

// ---- lexer

type token struct {
	s   string
	off int
}

func lex(expr string) ([]token, error) {
	var out []token
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '(' || c == ')':
			out = append(out, token{expr[i : i+1], i})
			i++
		case c == '!':
			out = append(out, token{"not", i})
			i++
		case strings.HasPrefix(expr[i:], "&&"):
			out = append(out, token{"and", i})
			i += 2
		case strings.HasPrefix(expr[i:], "||"):
			out = append(out, token{"or", i})
			i += 2
		default:
			j := i
			for j < len(expr) && !strings.ContainsRune(" \t\n\r()!&|", rune(expr[j])) {
				j++
			}
			if j == i {
				return nil, &Error{Expr: expr, Offset: i, Msg: fmt.Sprintf("unexpected %q", expr[i:i+1])}
			}
			if k := strings.IndexAny(expr[i:j], "[]"); k >= 0 {
				return nil, &Error{Expr: expr, Offset: i, Msg: fmt.Sprintf("%q: packet indexing (proto[offset]) is not supported", expr[i:j])}
			}
			out = append(out, token{expr[i:j], i})
			i = j
		}
	}
	return out, nil
}

// ---- syntax tree

type node interface{}

type andNode struct{ a, b node }
type orNode struct{ a, b node }
type notNode struct{ a node }
type constNode bool

// test is one load and comparison.
type test struct {
	kind loadKind
	size int    // 1, 2 or 4 bytes
	off  uint32 // absolute offset, or offset after the IPv4 header (ind)
	msh  uint32 // ind: offset of the IPv4 header whose length X gets
	ext  bpf.Extension
	mask uint32 // 0: none
	cond bpf.JumpTest
	val  uint32
}

type loadKind uint8

const (
	loadAbs loadKind = iota
	loadInd          // X = 4*(IPv4 IHL), then [X+off]
	loadExt          // kernel ancillary data (len, vlan)
)

func and(ns ...node) node {
	var r node
	for _, n := range ns {
		if r == nil {
			r = n
		} else {
			r = andNode{r, n}
		}
	}
	return r
}

func or(ns ...node) node {
	var r node
	for _, n := range ns {
		if r == nil {
			r = n
		} else {
			r = orNode{r, n}
		}
	}
	return r
}

func abs(size int, off uint32, cond bpf.JumpTest, val uint32) test {
	return test{kind: loadAbs, size: size, off: off, cond: cond, val: val}
}

// ---- parser

type parser struct {
	expr string
	toks []token
	pos  int
	l    layout
	// last holds the qualifiers of the last host, net, port or portrange
	// primitive: a bare value after it takes them, as in libpcap's
	// "port 80 or 443" and "host 10.0.0.1 or 10.0.0.2".
	last *quals
}

type quals struct{ proto, dir, kind string }

func (p *parser) errf(format string, a ...any) error {
	off := len(p.expr)
	if p.pos < len(p.toks) {
		off = p.toks[p.pos].off
	}
	return &Error{Expr: p.expr, Offset: off, Msg: fmt.Sprintf(format, a...)}
}

func (p *parser) peek() string {
	if p.pos < len(p.toks) {
		return p.toks[p.pos].s
	}
	return ""
}

func (p *parser) parseOr() (node, error) {
	n, err := p.parseAnd()
	for err == nil && p.peek() == "or" {
		p.pos++
		var m node
		if m, err = p.parseAnd(); err == nil {
			n = orNode{n, m}
		}
	}
	return n, err
}

func (p *parser) parseAnd() (node, error) {
	n, err := p.parseUnary()
	for err == nil && p.peek() == "and" {
		p.pos++
		var m node
		if m, err = p.parseUnary(); err == nil {
			n = andNode{n, m}
		}
	}
	return n, err
}

func (p *parser) parseUnary() (node, error) {
	switch p.peek() {
	case "not":
		p.pos++
		n, err := p.parseUnary()
		return notNode{n}, err
	case "(":
		p.pos++
		n, err := p.parseOr()
		if err != nil {
			return nil, err
		}
		if p.peek() != ")" {
			return nil, p.errf("missing )")
		}
		p.pos++
		return n, nil
	case "":
		return nil, p.errf("expression ends where a primitive was expected")
	}
	return p.parsePrimitive()
}

// Protocol qualifiers.
const (
	qNone = ""
)

var protoNums = map[string]uint32{"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmp6": 58}

const unsupportedHint = "supported: ip, ip6, arp, rarp, tcp, udp, sctp, icmp, icmp6, host, net, port, portrange, src, dst, proto, vlan, less, greater, and, or, not, ( )"

func (p *parser) parsePrimitive() (node, error) {
	word := func() string { return strings.ToLower(p.peek()) }
	if w := p.peek(); p.last != nil && w != "" && (w[0] >= '0' && w[0] <= '9' || strings.Contains(w, ":")) {
		return p.typed(p.last.proto, p.last.dir, p.last.kind)
	}
	proto := qNone
	switch w := word(); w {
	case "ip4":
		proto = "ip"
		p.pos++
	case "ip", "ip6", "arp", "rarp", "tcp", "udp", "sctp", "icmp", "icmp6":
		proto = w
		p.pos++
	case "vlan":
		p.pos++
		return p.vlan()
	case "less", "greater":
		p.pos++
		n, err := p.number(0xffffffff)
		if err != nil {
			return nil, err
		}
		if w == "less" { // len <= n
			return notNode{test{kind: loadExt, ext: bpf.ExtLen, cond: bpf.JumpGreaterThan, val: n}}, nil
		}
		return test{kind: loadExt, ext: bpf.ExtLen, cond: bpf.JumpGreaterOrEqual, val: n}, nil
	case "ether", "gateway", "broadcast", "multicast", "mpls", "pppoed", "pppoes", "geneve", "inbound", "outbound", "ifname", "len", "link", "fddi", "tr", "wlan", "decnet", "iso", "stp", "ipx", "netbeui", "atalk", "aarp", "lat", "mopdl", "moprc", "sca", "igmp", "igrp", "pim", "vrrp", "carp", "ah", "esp":
		return nil, p.errf("%q is not supported (%s)", p.peek(), unsupportedHint)
	}
	dir := ""
	if w := word(); w == "src" || w == "dst" {
		dir = w
		p.pos++
		if w2 := word(); w2 == "or" || w2 == "and" {
			return nil, p.errf("%q after %q is not supported: write (src … or dst …)", p.peek(), w)
		}
	}
	switch w := word(); w {
	case "host", "net", "port", "portrange":
		p.pos++
		return p.typed(proto, dir, w)
	case "proto":
		if dir != "" {
			return nil, p.errf("%q cannot take src or dst", w)
		}
		p.pos++
		return p.protoNum(proto)
	}
	if dir != "" {
		// "src 10.0.0.1": the type defaults to host.
		if p.pos < len(p.toks) && !isKeyword(word()) {
			return p.typed(proto, dir, "host")
		}
		return nil, p.errf("expected host, net, port or portrange after %q", dir)
	}
	if proto != qNone {
		return p.protoOnly(proto), nil
	}
	w := p.peek()
	if _, err := netip.ParseAddr(w); err == nil {
		return p.typed(proto, dir, "host")
	}
	return nil, p.errf("%q is not a primitive this compiler knows (%s)", w, unsupportedHint)
}

// typed parses the value of a host, net, port or portrange primitive and
// remembers its qualifiers for bare values that follow.
func (p *parser) typed(proto, dir, kind string) (node, error) {
	p.last = &quals{proto, dir, kind}
	switch kind {
	case "host":
		return p.addr(proto, dir, false)
	case "net":
		return p.addr(proto, dir, true)
	case "port":
		return p.port(proto, dir, false)
	}
	return p.port(proto, dir, true)
}

func isKeyword(w string) bool {
	switch w {
	case "and", "or", "not", "(", ")", "":
		return true
	}
	return false
}

func (p *parser) number(limit uint32) (uint32, error) {
	w := p.peek()
	n, err := strconv.ParseUint(w, 0, 32)
	if err != nil || uint32(n) > limit {
		return 0, p.errf("%q: want a number up to %d", w, limit)
	}
	p.pos++
	return uint32(n), nil
}

// Building blocks.

func (p *parser) isEtherType(t uint32) node {
	return abs(2, p.l.off-2, bpf.JumpEqual, t)
}

func (p *parser) isIP4() node {
	if p.l.ether {
		return p.isEtherType(0x0800)
	}
	return test{kind: loadAbs, size: 1, off: p.l.off, mask: 0xf0, cond: bpf.JumpEqual, val: 0x40}
}

func (p *parser) isIP6() node {
	if p.l.ether {
		return p.isEtherType(0x86dd)
	}
	return test{kind: loadAbs, size: 1, off: p.l.off, mask: 0xf0, cond: bpf.JumpEqual, val: 0x60}
}

func (p *parser) ip4Proto(n uint32) node {
	return and(p.isIP4(), abs(1, p.l.off+9, bpf.JumpEqual, n))
}

// ip6Proto looks at the next header, and through one fragment header, as
// libpcap does.
func (p *parser) ip6Proto(n uint32) node {
	nh := func(v uint32) node { return abs(1, p.l.off+6, bpf.JumpEqual, v) }
	return and(p.isIP6(), or(nh(n), and(nh(44), abs(1, p.l.off+40, bpf.JumpEqual, n))))
}

func (p *parser) protoOnly(proto string) node {
	switch proto {
	case "ip":
		return p.isIP4()
	case "ip6":
		return p.isIP6()
	case "arp":
		if !p.l.ether {
			return constNode(false)
		}
		return p.isEtherType(0x0806)
	case "rarp":
		if !p.l.ether {
			return constNode(false)
		}
		return p.isEtherType(0x8035)
	case "icmp":
		return p.ip4Proto(1)
	case "icmp6":
		return p.ip6Proto(58)
	}
	n := protoNums[proto]
	return or(p.ip4Proto(n), p.ip6Proto(n))
}

func (p *parser) protoNum(proto string) (node, error) {
	w := strings.ToLower(p.peek())
	n, ok := protoNums[w]
	if ok {
		p.pos++
	} else {
		var err error
		if n, err = p.number(255); err != nil {
			return nil, err
		}
	}
	switch proto {
	case "ip":
		return p.ip4Proto(n), nil
	case "ip6":
		return p.ip6Proto(n), nil
	case qNone:
		return or(p.ip4Proto(n), p.ip6Proto(n)), nil
	}
	return nil, p.errf("proto after %q", proto)
}

func (p *parser) vlan() (node, error) {
	if !p.l.ether {
		return nil, p.errf("vlan needs an ethernet link")
	}
	present := test{kind: loadExt, ext: bpf.ExtVLANTagPresent, cond: bpf.JumpNotEqual, val: 0}
	if _, err := strconv.ParseUint(p.peek(), 0, 32); err != nil {
		return present, nil
	}
	id, err := p.number(4095)
	if err != nil {
		return nil, err
	}
	return and(present, test{kind: loadExt, ext: bpf.ExtVLANTag, mask: 0x0fff, cond: bpf.JumpEqual, val: id}), nil
}

// addrTests compares the 4 or 16 bytes at off with a under mask bits.
func addrTests(off uint32, a netip.Addr, bits int) node {
	b := a.AsSlice()
	var ts []node
	for i := 0; i < len(b); i += 4 {
		rem := bits - i*8
		if rem <= 0 {
			break
		}
		m := uint32(0xffffffff)
		if rem < 32 {
			m = ^uint32(0) << (32 - rem)
		}
		v := uint32(b[i])<<24 | uint32(b[i+1])<<16 | uint32(b[i+2])<<8 | uint32(b[i+3])
		t := test{kind: loadAbs, size: 4, off: off + uint32(i), cond: bpf.JumpEqual, val: v & m}
		if m != 0xffffffff {
			t.mask = m
		}
		ts = append(ts, t)
	}
	if len(ts) == 0 {
		return constNode(true)
	}
	return and(ts...)
}

// dirOr combines the source and destination tests per dir.
func dirOr(dir string, src, dst node) node {
	switch dir {
	case "src":
		return src
	case "dst":
		return dst
	}
	return or(src, dst)
}

func (p *parser) prefix(w string, isNet bool) (netip.Prefix, error) {
	if isNet && strings.Contains(w, "/") {
		pf, err := netip.ParsePrefix(w)
		if err != nil {
			return pf, p.errf("%q: not a network (want ADDR/BITS): %v", w, err)
		}
		if pf.Masked() != pf {
			return pf, p.errf("%q: host bits set in the network (did you mean %s?)", w, pf.Masked())
		}
		return pf, nil
	}
	a, err := netip.ParseAddr(w)
	if err != nil {
		if w == "" {
			return netip.Prefix{}, p.errf("expression ends where an address was expected")
		}
		return netip.Prefix{}, p.errf("%q: not an address (host names are not resolved)", w)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}

func (p *parser) addr(proto, dir string, isNet bool) (node, error) {
	switch proto {
	case qNone, "ip", "ip6", "arp", "rarp":
	default:
		return nil, p.errf("%q cannot qualify an address (use ip, ip6, arp or rarp)", proto)
	}
	pf, err := p.prefix(p.peek(), isNet)
	if err != nil {
		return nil, err
	}
	p.pos++
	a, bits := pf.Addr(), pf.Bits()
	l := p.l.off
	if a.Is6() {
		if proto != qNone && proto != "ip6" {
			return nil, p.errf("IPv6 address %s with %q", a, proto)
		}
		return and(p.isIP6(), dirOr(dir, addrTests(l+8, a, bits), addrTests(l+24, a, bits))), nil
	}
	var alts []node
	switch proto {
	case qNone, "ip":
		alts = append(alts, and(p.isIP4(), dirOr(dir, addrTests(l+12, a, bits), addrTests(l+16, a, bits))))
	case "arp", "rarp":
	default:
		return nil, p.errf("%q cannot qualify an address (use ip, ip6, arp or rarp)", proto)
	}
	if p.l.ether {
		// ARP and RARP sender and target protocol addresses, as libpcap.
		for _, t := range []struct {
			name string
			typ  uint32
		}{{"arp", 0x0806}, {"rarp", 0x8035}} {
			if proto == qNone || proto == t.name {
				alts = append(alts, and(p.isEtherType(t.typ), dirOr(dir, addrTests(l+14, a, bits), addrTests(l+24, a, bits))))
			}
		}
	}
	if len(alts) == 0 {
		return constNode(false), nil
	}
	return or(alts...), nil
}

func (p *parser) port(proto, dir string, isRange bool) (node, error) {
	w := p.peek()
	var lo, hi uint32
	if isRange {
		a, b, ok := strings.Cut(w, "-")
		x, err1 := strconv.ParseUint(a, 10, 16)
		y, err2 := strconv.ParseUint(b, 10, 16)
		if !ok || err1 != nil || err2 != nil {
			return nil, p.errf("%q: want a port range LOW-HIGH", w)
		}
		lo, hi = uint32(min(x, y)), uint32(max(x, y))
	} else {
		x, err := strconv.ParseUint(w, 10, 16)
		if err != nil {
			return nil, p.errf("%q: want a port number (service names are not resolved)", w)
		}
		lo, hi = uint32(x), uint32(x)
	}
	p.pos++
	var protos []uint32
	switch proto {
	case qNone:
		protos = []uint32{6, 17, 132}
	case "tcp", "udp", "sctp":
		protos = []uint32{protoNums[proto]}
	case "ip", "ip6":
		protos = []uint32{6, 17, 132}
	default:
		return nil, p.errf("%q cannot qualify a port", proto)
	}
	cmp := func(t test) node {
		if lo == hi {
			t.cond, t.val = bpf.JumpEqual, lo
			return t
		}
		t.cond, t.val = bpf.JumpGreaterOrEqual, lo
		u := t
		u.cond, u.val = bpf.JumpGreaterThan, hi
		return and(t, notNode{u})
	}
	l := p.l.off
	var alts []node
	if proto != "ip6" {
		var pr []node
		for _, n := range protos {
			pr = append(pr, abs(1, l+9, bpf.JumpEqual, n))
		}
		notFrag := notNode{test{kind: loadAbs, size: 2, off: l + 6, cond: bpf.JumpBitsSet, val: 0x1fff}}
		src := cmp(test{kind: loadInd, size: 2, off: l, msh: l})
		dst := cmp(test{kind: loadInd, size: 2, off: l + 2, msh: l})
		alts = append(alts, and(p.isIP4(), or(pr...), notFrag, dirOr(dir, src, dst)))
	}
	if proto != "ip" {
		var pr []node
		for _, n := range protos {
			pr = append(pr, abs(1, l+6, bpf.JumpEqual, n))
		}
		src := cmp(test{kind: loadAbs, size: 2, off: l + 40})
		dst := cmp(test{kind: loadAbs, size: 2, off: l + 42})
		alts = append(alts, and(p.isIP6(), or(pr...), dirOr(dir, src, dst)))
	}
	// libpcap tests IPv6 first; the order does not change the verdict.
	if len(alts) == 2 {
		alts[0], alts[1] = alts[1], alts[0]
	}
	return or(alts...), nil
}

// ---- code generation

// pins is an instruction with symbolic jump targets.
type pins struct {
	ins   bpf.Instruction // when not a jump
	cond  bool            // conditional jump: test on A, to t or f
	jt    bpf.JumpTest
	val   uint32
	t, f  int // labels
	ja    int // unconditional jump to a label, when > 0 and !cond and ins == nil
	label int // a label definition (no instruction), when > 0
}

type gen struct {
	out  []pins
	next int
}

const (
	labelAccept = 1
	labelReject = 2
)

func (g *gen) newLabel() int { g.next++; return g.next }

func (g *gen) place(l int) { g.out = append(g.out, pins{label: l}) }

// emit generates code that jumps to t when n holds and to f otherwise.
func (g *gen) emit(n node, t, f int) {
	switch n := n.(type) {
	case andNode:
		mid := g.newLabel()
		g.emit(n.a, mid, f)
		g.place(mid)
		g.emit(n.b, t, f)
	case orNode:
		mid := g.newLabel()
		g.emit(n.a, t, mid)
		g.place(mid)
		g.emit(n.b, t, f)
	case notNode:
		g.emit(n.a, f, t)
	case constNode:
		if n {
			g.out = append(g.out, pins{ja: t})
		} else {
			g.out = append(g.out, pins{ja: f})
		}
	case test:
		switch n.kind {
		case loadAbs:
			g.out = append(g.out, pins{ins: bpf.LoadAbsolute{Off: n.off, Size: n.size}})
		case loadInd:
			g.out = append(g.out, pins{ins: bpf.LoadMemShift{Off: n.msh}}, pins{ins: bpf.LoadIndirect{Off: n.off, Size: n.size}})
		case loadExt:
			g.out = append(g.out, pins{ins: bpf.LoadExtension{Num: n.ext}})
		}
		if n.mask != 0 {
			g.out = append(g.out, pins{ins: bpf.ALUOpConstant{Op: bpf.ALUOpAnd, Val: n.mask}})
		}
		g.out = append(g.out, pins{cond: true, jt: n.cond, val: n.val, t: t, f: f})
	default:
		panic(fmt.Sprintf("filter: unknown node %T", n))
	}
}

// assemble lays out the tree's code and resolves its (forward) jumps.
func assemble(root node) ([]bpf.Instruction, error) {
	g := &gen{next: labelReject}
	g.emit(root, labelAccept, labelReject)
	g.place(labelAccept)
	g.out = append(g.out, pins{ins: bpf.RetConstant{Val: Snaplen}})
	g.place(labelReject)
	g.out = append(g.out, pins{ins: bpf.RetConstant{Val: 0}})

	// Resolve labels to positions; every jump goes forward.
	pos := map[int]int{}
	var final []pins
	for _, in := range g.out {
		if in.label > 0 {
			pos[in.label] = len(final)
			continue
		}
		final = append(final, in)
	}
	out := make([]bpf.Instruction, len(final))
	for i, in := range final {
		switch {
		case in.cond:
			st, sf := pos[in.t]-i-1, pos[in.f]-i-1
			if st < 0 || sf < 0 || st > 255 || sf > 255 {
				return nil, fmt.Errorf("expression too complex: a jump of %d instructions exceeds classic BPF's 255", max(st, sf))
			}
			out[i] = bpf.JumpIf{Cond: in.jt, Val: in.val, SkipTrue: uint8(st), SkipFalse: uint8(sf)}
		case in.ins == nil:
			out[i] = bpf.Jump{Skip: uint32(pos[in.ja] - i - 1)}
		default:
			out[i] = in.ins
		}
	}
	if len(out) > 4096 {
		return nil, fmt.Errorf("program of %d instructions exceeds the kernel's 4096", len(out))
	}
	return out, nil
}
