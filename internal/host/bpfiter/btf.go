package bpfiter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/cilium/ebpf/asm"
)

// This file is a minimal reader of the kernel's BTF (Documentation/bpf/btf.rst),
// enough to resolve the iterator's layout and attach target. cilium/ebpf
// decodes every one of vmlinux's ~150,000 types into Go values and indexes
// them by name (~25 ms and ~100 MB of allocations per run); here the type
// section is walked once to index where each type starts, and only the few
// types the program touches are ever decoded. Pure Go and platform-neutral
// so its tests and fuzzing run anywhere.

// field is where one structure member lives: its byte offset and the load
// size that matches the member's own size. The verifier checks loads from
// BTF pointers against the member layout, so both come from the running
// kernel's BTF and never from constants.
type field struct {
	off  int16
	size asm.Size
}

// layout is every offset the iterator program dereferences.
type layout struct {
	// Members of struct bpf_iter__task_file, the program's context.
	ctxMeta, ctxTask, ctxFD, ctxFile field
	metaSeq                          field // struct bpf_iter_meta.seq
	taskTGID                         field // struct task_struct.tgid
	fileInode                        field // struct file.f_inode
	inodeMode                        field // struct inode.i_mode
	inodeIno                         field // struct inode.i_ino
}

// BTF kinds (uapi linux/btf.h).
const (
	kindVoid      = 0 // type ID 0, never in the type section
	kindInt       = 1
	kindPtr       = 2
	kindArray     = 3
	kindStruct    = 4
	kindUnion     = 5
	kindEnum      = 6
	kindFwd       = 7
	kindTypedef   = 8
	kindVolatile  = 9
	kindConst     = 10
	kindRestrict  = 11
	kindFunc      = 12
	kindFuncProto = 13
	kindVar       = 14
	kindDatasec   = 15
	kindFloat     = 16
	kindDeclTag   = 17
	kindTypeTag   = 18
	kindEnum64    = 19
)

const (
	btfMagic = 0xeB9F
	// btfHeaderLen is the header through str_len; later kernels may
	// append fields, which hdr_len covers.
	btfHeaderLen = 24
	btfTypeLen   = 12 // struct btf_type: name_off, info, size/type
	// maxResolveDepth bounds typedef/qualifier chains and anonymous
	// member nesting, so a cycle in bad data ends in an error (cilium
	// uses the same bound).
	maxResolveDepth = 32
	// maxMemberVisits bounds one member lookup: depth alone does not, as
	// a struct with two anonymous members of its own type would take
	// 2^32 steps. task_struct, the largest searched, has a few hundred
	// members counting nested anonymous ones.
	maxMemberVisits = 1 << 16
)

// Names the iterator needs. The attach target of iter/NAME is the
// kernel function bpf_iter_NAME.
const (
	ctxStructName  = "bpf_iter__task_file"
	attachFuncName = "bpf_iter_task_file"
)

// btfFile is a parsed BTF blob: the raw sections and where each type
// starts. Nothing is copied out of the blob.
type btfFile struct {
	bo    binary.ByteOrder
	types []byte
	strs  []byte
	offs  []uint32 // offs[id-1] is where type id starts in types
	named [2]namedType
}

// namedType is a type looked up by kind and name during the walk, which
// passes over every type anyway: a second pass to find it costs as much
// as the walk again in cache misses. So does reading each candidate's
// name from the string section, so the walk compares name offsets with
// the offsets where the name occurs, found beforehand by a fast search.
type namedType struct {
	kind  uint8
	name  string
	at    []uint32 // every offset in strs where name+"\x00" starts
	id    uint32   // the first match
	count int
}

// locate fills n.at: each offset at which the string section holds
// exactly n.name, including as the tail of a longer string.
func (n *namedType) locate(strs []byte) {
	pat := append([]byte(n.name), 0)
	for base := 0; ; {
		i := bytes.Index(strs[base:], pat)
		if i < 0 {
			return
		}
		n.at = append(n.at, uint32(base+i))
		base += i + 1
	}
}

// btfType is one decoded struct btf_type header.
type btfType struct {
	id       uint32
	nameOff  uint32
	kind     uint8
	kindFlag bool
	vlen     int
	sizeType uint32 // size for int, struct, union, enum, datasec; a type ID for the others
	tail     uint32 // offset in types of the kind-specific data
}

// btfMember is one struct or union member, offsets in bits.
type btfMember struct {
	nameOff uint32
	typ     uint32
	bitOff  uint64
	bitSize uint32
}

// parseBTF checks the header and walks the type section once, indexing
// every type. It rejects any byte it cannot account for rather than
// guessing: the caller then falls back to cilium/ebpf.
func parseBTF(data []byte) (*btfFile, error) {
	if len(data) < btfHeaderLen {
		return nil, fmt.Errorf("btf: %d bytes, shorter than the %d-byte header", len(data), btfHeaderLen)
	}
	var bo binary.ByteOrder
	switch {
	case binary.LittleEndian.Uint16(data) == btfMagic:
		bo = binary.LittleEndian
	case binary.BigEndian.Uint16(data) == btfMagic:
		bo = binary.BigEndian
	default:
		return nil, fmt.Errorf("btf: header: bad magic %#04x", binary.LittleEndian.Uint16(data))
	}
	if v := data[2]; v != 1 {
		return nil, fmt.Errorf("btf: header: unsupported version %d", v)
	}
	hdrLen := uint64(bo.Uint32(data[4:]))
	typeOff, typeLen := uint64(bo.Uint32(data[8:])), uint64(bo.Uint32(data[12:]))
	strOff, strLen := uint64(bo.Uint32(data[16:])), uint64(bo.Uint32(data[20:]))
	if hdrLen < btfHeaderLen || hdrLen > uint64(len(data)) {
		return nil, fmt.Errorf("btf: header: hdr_len %d outside [%d, %d]", hdrLen, btfHeaderLen, len(data))
	}
	body := data[hdrLen:]
	if typeOff+typeLen > uint64(len(body)) {
		return nil, fmt.Errorf("btf: header: type section [%d, +%d) past the end (%d bytes)", typeOff, typeLen, len(body))
	}
	if strOff+strLen > uint64(len(body)) {
		return nil, fmt.Errorf("btf: header: string section [%d, +%d) past the end (%d bytes)", strOff, strLen, len(body))
	}
	b := &btfFile{
		bo:    bo,
		types: body[typeOff : typeOff+typeLen],
		strs:  body[strOff : strOff+strLen],
		named: [2]namedType{{kind: kindStruct, name: ctxStructName}, {kind: kindFunc, name: attachFuncName}},
	}
	for i := range b.named {
		b.named[i].locate(b.strs)
	}
	// vmlinux averages ~25 bytes per type (6.18: 126,585 in 3.2 MB); one
	// guess on the high side saves regrowing the index.
	b.offs = make([]uint32, 0, len(b.types)/20+1)
	for off := uint64(0); off < uint64(len(b.types)); {
		id := len(b.offs) + 1
		if off+btfTypeLen > uint64(len(b.types)) {
			return nil, fmt.Errorf("btf: type %d at offset %d: header truncated", id, off)
		}
		info := bo.Uint32(b.types[off+4:])
		kind, vlen := uint8(info>>24&0x1f), uint64(info&0xffff)
		var tail uint64
		switch kind {
		case kindInt, kindVar, kindDeclTag:
			tail = 4
		case kindPtr, kindFwd, kindTypedef, kindVolatile, kindConst, kindRestrict,
			kindFunc, kindFloat, kindTypeTag:
		case kindArray:
			tail = 12 // struct btf_array
		case kindStruct, kindUnion, kindDatasec, kindEnum64:
			tail = 12 * vlen // btf_member, btf_var_secinfo, btf_enum64
		case kindEnum, kindFuncProto:
			tail = 8 * vlen // btf_enum, btf_param
		default:
			return nil, fmt.Errorf("btf: type %d at offset %d: unknown kind %d", id, off, kind)
		}
		next := off + btfTypeLen + tail
		if next > uint64(len(b.types)) {
			return nil, fmt.Errorf("btf: type %d at offset %d: kind %d with %d entries runs past the type section (%d bytes)",
				id, off, kind, vlen, len(b.types))
		}
		b.offs = append(b.offs, uint32(off))
		if kind == kindStruct || kind == kindFunc {
			nameOff := bo.Uint32(b.types[off:])
			for i := range b.named {
				if n := &b.named[i]; n.kind == kind && slices.Contains(n.at, nameOff) {
					if n.count++; n.id == 0 {
						n.id = uint32(id)
					}
				}
			}
		}
		off = next
	}
	return b, nil
}

// typ decodes the header of type id. ID 0 is void.
func (b *btfFile) typ(id uint32) (btfType, error) {
	if id == 0 {
		return btfType{kind: kindVoid}, nil
	}
	if uint64(id) > uint64(len(b.offs)) {
		return btfType{}, fmt.Errorf("btf: type ID %d out of range (%d types)", id, len(b.offs))
	}
	off := b.offs[id-1]
	t := b.types[off:] // parseBTF checked the header and tail fit
	info := b.bo.Uint32(t[4:])
	return btfType{
		id:       id,
		nameOff:  b.bo.Uint32(t),
		kind:     uint8(info >> 24 & 0x1f),
		kindFlag: info>>31 != 0,
		vlen:     int(info & 0xffff),
		sizeType: b.bo.Uint32(t[8:]),
		tail:     off + btfTypeLen,
	}, nil
}

// member decodes member i of a struct or union; i < t.vlen.
func (b *btfFile) member(t btfType, i int) btfMember {
	m := b.types[t.tail+uint32(12*i):]
	raw := b.bo.Uint32(m[8:])
	mb := btfMember{nameOff: b.bo.Uint32(m), typ: b.bo.Uint32(m[4:]), bitOff: uint64(raw)}
	if t.kindFlag {
		// With kind_flag set, offset packs bitfield_size<<24 | bit_offset.
		mb.bitOff, mb.bitSize = uint64(raw&0xffffff), raw>>24
	}
	return mb
}

// nameIs reports whether the string at off is exactly name, comparing in
// place so that scanning every type allocates nothing.
func (b *btfFile) nameIs(off uint32, name string) bool {
	end := uint64(off) + uint64(len(name))
	return end < uint64(len(b.strs)) && string(b.strs[off:end]) == name && b.strs[end] == 0
}

// name returns the string at off, for error messages only.
func (b *btfFile) name(off uint32) string {
	if uint64(off) >= uint64(len(b.strs)) {
		return fmt.Sprintf("<bad name offset %d>", off)
	}
	s := b.strs[off:]
	if i := bytes.IndexByte(s, 0); i >= 0 {
		return string(s[:i])
	}
	return "<unterminated name>"
}

func (b *btfFile) anonymous(off uint32) bool {
	return uint64(off) >= uint64(len(b.strs)) || b.strs[off] == 0
}

// errMultiple says a name that must be unique is not.
var errMultiple = errors.New("more than one type of that name")

// find returns the ID of the one type of kind named name; parseBTF
// looked for it.
func (b *btfFile) find(kind uint8, name string) (uint32, error) {
	for _, n := range b.named {
		if n.kind != kind || n.name != name {
			continue
		}
		switch n.count {
		case 0:
			return 0, fmt.Errorf("btf: no type of kind %d named %s", kind, name)
		case 1:
			return n.id, nil
		}
		return 0, fmt.Errorf("btf: %s: %w (%d of them, the first is ID %d)", name, errMultiple, n.count, n.id)
	}
	return 0, fmt.Errorf("btf: %s of kind %d was not looked up", name, kind)
}

// underlying follows typedefs and qualifiers (const, volatile, restrict,
// type tags) to the type they name.
func (b *btfFile) underlying(id uint32) (btfType, error) {
	for range maxResolveDepth {
		t, err := b.typ(id)
		if err != nil {
			return t, err
		}
		switch t.kind {
		case kindTypedef, kindVolatile, kindConst, kindRestrict, kindTypeTag:
			id = t.sizeType
		default:
			return t, nil
		}
	}
	return btfType{}, fmt.Errorf("btf: type %d: typedef or qualifier chain deeper than %d", id, maxResolveDepth)
}

// sizeof is a type's size in bytes, as cilium's btf.Sizeof computes it.
func (b *btfFile) sizeof(id uint32) (uint64, error) {
	n := uint64(1)
	for range maxResolveDepth {
		t, err := b.typ(id)
		if err != nil {
			return 0, err
		}
		var elem uint64
		switch t.kind {
		case kindTypedef, kindVolatile, kindConst, kindRestrict, kindTypeTag:
			id = t.sizeType
			continue
		case kindArray:
			a := b.types[t.tail:]
			nelems := uint64(b.bo.Uint32(a[8:]))
			if n > 0 && nelems > math.MaxInt32/n {
				return 0, fmt.Errorf("btf: type %d: array size overflows", t.id)
			}
			n *= nelems
			id = b.bo.Uint32(a) // element type
			continue
		case kindPtr:
			elem = 8
		case kindInt, kindStruct, kindUnion, kindEnum, kindEnum64, kindDatasec, kindFloat:
			elem = uint64(t.sizeType)
		default:
			return 0, fmt.Errorf("btf: type %d of kind %d has no size", t.id, t.kind)
		}
		return n * elem, nil
	}
	return 0, fmt.Errorf("btf: type %d: type chain deeper than %d", id, maxResolveDepth)
}

// findMember looks name up in struct or union id, descending into
// anonymous members (the iterator context wraps each pointer in an
// anonymous union, __bpf_md_ptr, and kernel structs use anonymous unions
// freely). The offset returned is in bits from the start of id.
func (b *btfFile) findMember(id uint32, name string, depth int, budget *int) (btfMember, bool, error) {
	if depth > maxResolveDepth {
		return btfMember{}, false, fmt.Errorf("btf: type %d: anonymous members nested deeper than %d", id, maxResolveDepth)
	}
	t, err := b.underlying(id)
	if err != nil {
		return btfMember{}, false, err
	}
	if t.kind != kindStruct && t.kind != kindUnion {
		return btfMember{}, false, nil
	}
	for i := range t.vlen {
		if *budget--; *budget < 0 {
			return btfMember{}, false, fmt.Errorf("btf: type %d: more than %d members searched for %s", id, maxMemberVisits, name)
		}
		m := b.member(t, i)
		if b.nameIs(m.nameOff, name) {
			return m, true, nil
		}
		if b.anonymous(m.nameOff) {
			inner, ok, err := b.findMember(m.typ, name, depth+1, budget)
			if err != nil {
				return btfMember{}, false, err
			}
			if ok {
				inner.bitOff += m.bitOff
				return inner, true, nil
			}
		}
	}
	return btfMember{}, false, nil
}

// memberField resolves name in struct s to a byte offset that fits a BPF
// load's 16-bit displacement and the member's byte size, and returns the
// member's type ID.
func (b *btfFile) memberField(s btfType, name string) (field, uint32, error) {
	sname := b.name(s.nameOff)
	budget := maxMemberVisits
	m, ok, err := b.findMember(s.id, name, 0, &budget)
	if err != nil {
		return field{}, 0, fmt.Errorf("%s.%s: %w", sname, name, err)
	}
	if !ok {
		return field{}, 0, fmt.Errorf("struct %s has no member %s", sname, name)
	}
	if m.bitSize != 0 || m.bitOff%8 != 0 {
		return field{}, 0, fmt.Errorf("%s.%s is a bitfield", sname, name)
	}
	off := m.bitOff / 8
	if off > math.MaxInt16 {
		return field{}, 0, fmt.Errorf("%s.%s at offset %d is out of reach of one load", sname, name, off)
	}
	n, err := b.sizeof(m.typ)
	if err != nil {
		return field{}, 0, fmt.Errorf("%s.%s: %w", sname, name, err)
	}
	size, ok := loadSize(n)
	if !ok {
		return field{}, 0, fmt.Errorf("%s.%s has size %d", sname, name, n)
	}
	return field{off: int16(off), size: size}, m.typ, nil
}

// scalarMember resolves an integer (or enum) member.
func (b *btfFile) scalarMember(s btfType, name string) (field, error) {
	f, typ, err := b.memberField(s, name)
	if err != nil {
		return f, err
	}
	t, err := b.underlying(typ)
	if err != nil {
		return f, err
	}
	switch t.kind {
	case kindInt, kindEnum, kindEnum64:
		return f, nil
	}
	return f, fmt.Errorf("%s.%s is not an integer", b.name(s.nameOff), name)
}

// pointerMember resolves a member that points to a struct and returns that
// struct too.
func (b *btfFile) pointerMember(s btfType, name string) (field, btfType, error) {
	f, typ, err := b.memberField(s, name)
	if err != nil {
		return f, btfType{}, err
	}
	p, err := b.underlying(typ)
	if err != nil {
		return f, btfType{}, err
	}
	if p.kind != kindPtr || f.size != asm.DWord {
		return f, btfType{}, fmt.Errorf("%s.%s is not a 64-bit pointer", b.name(s.nameOff), name)
	}
	target, err := b.underlying(p.sizeType)
	if err != nil {
		return f, btfType{}, err
	}
	if target.kind != kindStruct {
		return f, btfType{}, fmt.Errorf("%s.%s does not point to a struct", b.name(s.nameOff), name)
	}
	return f, target, nil
}

// iterTarget resolves what the cilium path's resolveLayout and its
// AttachTo: "task_file" resolve: the program's layout and the BTF ID of
// the FUNC bpf_iter_task_file to attach to. It follows the pointer types
// of the context members (task → task_struct, file → file, f_inode →
// inode) rather than looking those structs up by name, so a kernel that
// duplicated one of them still resolves to the type the verifier uses.
func (b *btfFile) iterTarget() (layout, uint32, error) {
	var l layout
	attachID, err := b.find(kindFunc, attachFuncName)
	if err != nil {
		return l, 0, fmt.Errorf("kernel BTF: attach target: %w", err)
	}
	ctxID, err := b.find(kindStruct, ctxStructName)
	if err != nil {
		return l, 0, fmt.Errorf("kernel BTF: struct %s: %w", ctxStructName, err)
	}
	ctx, err := b.typ(ctxID)
	if err != nil {
		return l, 0, err
	}
	var meta, task, file, inode btfType
	// Each step depends on the struct the one before it found, so stop at
	// the first failure.
	for _, step := range []func() error{
		func() (e error) { l.ctxMeta, meta, e = b.pointerMember(ctx, "meta"); return },
		func() (e error) { l.ctxTask, task, e = b.pointerMember(ctx, "task"); return },
		func() (e error) { l.ctxFD, e = b.scalarMember(ctx, "fd"); return },
		func() (e error) { l.ctxFile, file, e = b.pointerMember(ctx, "file"); return },
		func() (e error) { l.metaSeq, _, e = b.pointerMember(meta, "seq"); return },
		func() (e error) { l.taskTGID, e = b.scalarMember(task, "tgid"); return },
		func() (e error) { l.fileInode, inode, e = b.pointerMember(file, "f_inode"); return },
		func() (e error) { l.inodeMode, e = b.scalarMember(inode, "i_mode"); return },
		func() (e error) { l.inodeIno, e = b.scalarMember(inode, "i_ino"); return },
	} {
		if err := step(); err != nil {
			return l, 0, fmt.Errorf("kernel BTF: %w", err)
		}
	}
	// The program copies these into a fixed record; wider members would
	// be silently truncated.
	if l.ctxFD.size > asm.Word || l.taskTGID.size > asm.Word {
		return l, 0, fmt.Errorf("kernel BTF: fd or tgid wider than 32 bits")
	}
	return l, attachID, nil
}

// loadSize is the BPF load of a member of n bytes; false when no single
// load fits.
func loadSize[N int | uint32 | uint64](n N) (asm.Size, bool) {
	switch n {
	case 1:
		return asm.Byte, true
	case 2:
		return asm.Half, true
	case 4:
		return asm.Word, true
	case 8:
		return asm.DWord, true
	}
	return 0, false
}
