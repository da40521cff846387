package bpfiter

import (
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// btfBuilder writes a BTF blob type by type, as the kernel lays it out.
type btfBuilder struct {
	bo    binary.AppendByteOrder
	types []byte
	strs  []byte
	n     uint32
}

func newBTFBuilder(bo binary.AppendByteOrder) *btfBuilder {
	return &btfBuilder{bo: bo, strs: []byte{0}}
}

func (b *btfBuilder) str(s string) uint32 {
	if s == "" {
		return 0
	}
	off := uint32(len(b.strs))
	b.strs = append(append(b.strs, s...), 0)
	return off
}

// add appends one type and returns its ID; tail is the kind's extra data
// in 32-bit words.
func (b *btfBuilder) add(kind uint8, name string, vlen int, kflag bool, sizeType uint32, tail ...uint32) uint32 {
	info := uint32(kind)<<24 | uint32(vlen)
	if kflag {
		info |= 1 << 31
	}
	for _, w := range append([]uint32{b.str(name), info, sizeType}, tail...) {
		b.types = b.bo.AppendUint32(b.types, w)
	}
	b.n++
	return b.n
}

type mem struct {
	name    string
	typ     uint32
	bitOff  uint32
	bitSize uint32 // only with kflag
}

func (b *btfBuilder) composite(kind uint8, name string, size uint32, kflag bool, ms ...mem) uint32 {
	var tail []uint32
	for _, m := range ms {
		off := m.bitOff
		if kflag {
			off |= m.bitSize << 24
		}
		tail = append(tail, b.str(m.name), m.typ, off)
	}
	return b.add(kind, name, len(ms), kflag, size, tail...)
}

func (b *btfBuilder) bytes() []byte {
	h := make([]byte, 0, btfHeaderLen)
	h = b.bo.AppendUint16(h, btfMagic)
	h = append(h, 1, 0) // version, flags
	for _, w := range []uint32{btfHeaderLen, 0, uint32(len(b.types)), uint32(len(b.types)), uint32(len(b.strs))} {
		h = b.bo.AppendUint32(h, w)
	}
	return append(append(h, b.types...), b.strs...)
}

// synth varies the synthetic kernel to break one rule at a time.
type synth struct {
	bo             binary.ByteOrder
	tgidBitfield   bool
	noFInode       bool
	inoSize16      bool
	fileIsUnion    bool
	dupCtx         bool
	noFunc         bool
	fdTypedefCycle bool
	anonCycle      bool
	anonFanout     bool
	fdIsPointer    bool
	tgid64         bool
}

// synthBTF is a small kernel BTF with the iterator's types shaped like
// vmlinux's (pointers wrapped in anonymous unions, typedefs, const and
// type-tagged pointers, a kind_flag struct with bitfields) and one type of
// every other kind, so the walk meets every tail length.
func synthBTF(s synth) []byte {
	if s.bo == nil {
		s.bo = binary.LittleEndian
	}
	b := newBTFBuilder(s.bo.(binary.AppendByteOrder))
	u32 := b.add(kindInt, "unsigned int", 0, false, 4, 32)
	u64 := b.add(kindInt, "long long unsigned int", 0, false, 8, 64)
	u16 := b.add(kindInt, "short unsigned int", 0, false, 2, 16)
	umode := b.add(kindTypedef, "umode_t", 0, false, u16)
	sint := b.add(kindInt, "int", 0, false, 4, 1<<24|32)
	pid := b.add(kindTypedef, "pid_t", 0, false, sint)

	// Other kinds, for the walk.
	arr := b.add(kindArray, "", 0, false, 0, u64, u32, 2)
	b.add(kindEnum, "e", 2, false, 4, b.str("A"), 0, b.str("B"), 1)
	b.add(kindFwd, "fwd", 0, false, 0)
	b.add(kindVolatile, "", 0, false, u32)
	b.add(kindFloat, "double", 0, false, 8)
	e64 := b.add(kindEnum64, "e64", 1, false, 8, b.str("C"), 1, 2)
	v := b.add(kindVar, "some_var", 0, false, u32, 1)
	b.add(kindDatasec, ".data", 1, false, 4, v, 0, 4)

	inoType := uint32(u64)
	if s.inoSize16 {
		inoType = arr
	}
	inode := b.composite(kindStruct, "inode", 80, false,
		mem{name: "i_mode", typ: umode},
		mem{name: "i_opflags", typ: u16, bitOff: 16},
		mem{name: "i_ino", typ: inoType, bitOff: 512})
	inodeTag := b.add(kindTypeTag, "rcu", 0, false, inode)
	pInode := b.add(kindPtr, "", 0, false, inodeTag)
	cpInode := b.add(kindConst, "", 0, false, pInode)
	fileMembers := []mem{{name: "f_mode", typ: u32}}
	if !s.noFInode {
		fileMembers = append(fileMembers, mem{name: "f_inode", typ: cpInode, bitOff: 64})
	}
	fileKind := uint8(kindStruct)
	if s.fileIsUnion {
		fileKind = kindUnion
	}
	file := b.composite(fileKind, "file", 32, false, fileMembers...)

	tgid := mem{name: "tgid", typ: pid, bitOff: 96}
	if s.tgidBitfield {
		tgid.bitSize = 20
	}
	if s.tgid64 {
		tgid.typ = u64
	}
	task := b.composite(kindStruct, "task_struct", 128, true,
		mem{name: "", typ: u32, bitSize: 3},
		mem{name: "flags", typ: u32, bitOff: 3, bitSize: 29},
		mem{name: "pid", typ: pid, bitOff: 64},
		tgid)

	seq := b.composite(kindStruct, "seq_file", 8, false, mem{name: "size", typ: u64})
	pSeq := b.add(kindPtr, "", 0, false, seq)
	// __bpf_md_ptr(struct seq_file *, seq): union { ptr; __u64 :64; }.
	seqU := b.composite(kindUnion, "", 8, true, mem{name: "seq", typ: pSeq}, mem{typ: u64, bitSize: 64})
	meta := b.composite(kindStruct, "bpf_iter_meta", 24, false,
		mem{typ: seqU}, mem{name: "session_id", typ: u64, bitOff: 64}, mem{name: "seq_num", typ: u64, bitOff: 128})
	pMeta := b.add(kindPtr, "", 0, false, meta)
	metaU := b.composite(kindUnion, "", 8, true, mem{name: "meta", typ: pMeta}, mem{typ: u64, bitSize: 64})
	pTask := b.add(kindPtr, "", 0, false, task)
	taskU := b.composite(kindUnion, "", 8, true, mem{name: "task", typ: pTask}, mem{typ: u64, bitSize: 64})
	pFile := b.add(kindPtr, "", 0, false, file)
	restrictFile := b.add(kindRestrict, "", 0, false, pFile)
	fileU := b.composite(kindUnion, "", 8, true, mem{name: "file", typ: restrictFile}, mem{typ: u64, bitSize: 64})

	fdType := u32
	switch {
	case s.fdTypedefCycle:
		// A typedef naming itself: its ID is the next one.
		fdType = b.add(kindTypedef, "loop", 0, false, b.n+1)
	case s.fdIsPointer:
		fdType = pSeq
	}
	ctxMembers := []mem{{typ: metaU}, {typ: taskU, bitOff: 64}, {name: "fd", typ: fdType, bitOff: 128}, {typ: fileU, bitOff: 192}}
	if s.anonCycle {
		// An anonymous member whose type is the struct itself.
		ctxMembers = append([]mem{{typ: b.n + 1}}, ctxMembers...)
	}
	if s.anonFanout {
		// Two of them: 2^depth paths unless the search is bounded.
		ctxMembers = append([]mem{{typ: b.n + 1}, {typ: b.n + 1}}, ctxMembers...)
	}
	ctx := b.composite(kindStruct, "bpf_iter__task_file", 32, false, ctxMembers...)
	if s.dupCtx {
		b.composite(kindStruct, "bpf_iter__task_file", 8, false, mem{name: "x", typ: u64})
	}
	b.add(kindDeclTag, "tag", 0, false, ctx, 0xffffffff)
	b.add(kindEnum64, "", 0, false, 8) // empty enum64: vlen 0
	pCtx := b.add(kindPtr, "", 0, false, ctx)
	proto := b.add(kindFuncProto, "", 1, false, sint, b.str("ctx"), pCtx)
	if !s.noFunc {
		b.add(kindFunc, "bpf_iter_task_file", 0, false, proto)
	}
	b.add(kindFunc, "bpf_iter_task_file_other", 0, false, proto)
	_ = e64
	return b.bytes()
}

// synthLayout is what synthBTF describes.
var synthLayout = layout{
	ctxMeta:   field{0, asm.DWord},
	ctxTask:   field{8, asm.DWord},
	ctxFD:     field{16, asm.Word},
	ctxFile:   field{24, asm.DWord},
	metaSeq:   field{0, asm.DWord},
	taskTGID:  field{12, asm.Word},
	fileInode: field{8, asm.DWord},
	inodeMode: field{0, asm.Half},
	inodeIno:  field{64, asm.DWord},
}

func TestIterTargetSynthetic(t *testing.T) {
	for _, bo := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		data := synthBTF(synth{bo: bo})
		b, err := parseBTF(data)
		if err != nil {
			t.Fatalf("%v: %v", bo, err)
		}
		if b.bo != bo {
			t.Errorf("byte order %v, want %v", b.bo, bo)
		}
		l, id, err := b.iterTarget()
		if err != nil {
			t.Fatalf("%v: %v", bo, err)
		}
		if l != synthLayout {
			t.Errorf("%v: layout\n%+v, want\n%+v", bo, l, synthLayout)
		}
		ft, err := b.typ(id)
		if err != nil || ft.kind != kindFunc || b.name(ft.nameOff) != attachFuncName {
			t.Errorf("%v: attach ID %d is %+v (%q), %v", bo, id, ft, b.name(ft.nameOff), err)
		}
	}
}

func TestIterTargetErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    synth
		want string
	}{
		{"tgid bitfield", synth{tgidBitfield: true}, "task_struct.tgid is a bitfield"},
		{"no f_inode", synth{noFInode: true}, "struct file has no member f_inode"},
		{"i_ino 16 bytes", synth{inoSize16: true}, "inode.i_ino has size 16"},
		{"file is a union", synth{fileIsUnion: true}, "does not point to a struct"},
		{"two contexts", synth{dupCtx: true}, "more than one type"},
		{"no attach function", synth{noFunc: true}, "no type of kind 12 named bpf_iter_task_file"},
		{"typedef cycle", synth{fdTypedefCycle: true}, "deeper than"},
		{"anonymous member cycle", synth{anonCycle: true}, "nested deeper than"},
		{"anonymous member fan-out", synth{anonFanout: true}, "nested deeper than"},
		{"fd is a pointer", synth{fdIsPointer: true}, "bpf_iter__task_file.fd is not an integer"},
		{"tgid 64 bits", synth{tgid64: true}, "wider than 32 bits"},
	} {
		b, err := parseBTF(synthBTF(tc.s))
		if err != nil {
			t.Fatalf("%s: parse: %v", tc.name, err)
		}
		_, _, err = b.iterTarget()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	b, _ := parseBTF(synthBTF(synth{dupCtx: true}))
	if _, _, err := b.iterTarget(); !errors.Is(err, errMultiple) {
		t.Errorf("duplicate context: %v does not wrap errMultiple", err)
	}
}

func TestParseBTFErrors(t *testing.T) {
	good := synthBTF(synth{})
	patch := func(off int, v uint32) []byte {
		d := append([]byte(nil), good...)
		binary.LittleEndian.PutUint32(d[off:], v)
		return d
	}
	// An unknown kind in the first type's info word.
	badKind := append([]byte(nil), good...)
	badKind[btfHeaderLen+7] = 20
	// The last type, a struct, claims 1000 members it does not have.
	b := newBTFBuilder(binary.LittleEndian)
	b.add(kindInt, "int", 0, false, 4, 32)
	b.add(kindStruct, "s", 1000, false, 8)
	longTail := b.bytes()
	for _, tc := range []struct {
		name string
		data []byte
		want string
	}{
		{"empty", nil, "shorter than"},
		{"bad magic", append([]byte{0, 0}, good[2:]...), "bad magic"},
		{"version 2", append([]byte{0x9f, 0xeb, 2}, good[3:]...), "unsupported version 2"},
		{"hdr_len small", patch(4, 8), "hdr_len 8"},
		{"hdr_len huge", patch(4, 1<<30), "hdr_len"},
		{"type section past end", patch(12, 1<<20), "type section"},
		{"string offset past end", patch(16, 1<<31), "string section"},
		{"unknown kind", badKind, "unknown kind 20"},
		{"tail past end", longTail, "runs past the type section"},
		{"truncated type header", patch(12, 16+5), "header truncated"},
	} {
		_, err := parseBTF(tc.data)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}

// TestBTFLookups covers the accessors on bad IDs and names, which kernel
// BTF never exercises.
func TestBTFLookups(t *testing.T) {
	b, err := parseBTF(synthBTF(synth{}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.typ(uint32(len(b.offs) + 1)); err == nil {
		t.Error("type ID past the end accepted")
	}
	if v, err := b.typ(0); err != nil || v.kind != kindVoid {
		t.Errorf("void: %+v %v", v, err)
	}
	if _, err := b.sizeof(0); err == nil {
		t.Error("void has a size")
	}
	if got := b.name(uint32(len(b.strs))); !strings.Contains(got, "bad name offset") {
		t.Errorf("name past the end: %q", got)
	}
	if b.nameIs(uint32(len(b.strs)), "") || b.nameIs(1<<31, "int") {
		t.Error("nameIs matched past the string section")
	}
	if !b.nameIs(1, "unsigned int") { // the first string after the empty one
		t.Error("nameIs missed the first string")
	}
	if b.nameIs(1, "unsigned") || b.nameIs(1, "unsigned int x") {
		t.Error("nameIs matched a prefix or an extension")
	}
}

// kernelBTFSeeds are truncations of the running kernel's BTF, if it has
// one: the raw cut (header intact, sections past the end) and a cut that
// keeps the first types and strings whole with the header rewritten, so
// the fuzzer starts from real type shapes.
func kernelBTFSeeds(tb testing.TB) [][]byte {
	data, err := os.ReadFile("/sys/kernel/btf/vmlinux")
	if err != nil || len(data) < 64<<10 {
		return nil
	}
	b, err := parseBTF(data)
	if err != nil || len(b.offs) < 200 {
		tb.Logf("kernel BTF: %v", err)
		return nil
	}
	types := b.types[:b.offs[199]]
	strs := b.strs[:min(len(b.strs), 8<<10)]
	h := append([]byte(nil), data[:btfHeaderLen]...)
	for i, w := range []uint32{btfHeaderLen, 0, uint32(len(types)), uint32(len(types)), uint32(len(strs))} {
		b.bo.PutUint32(h[4+4*i:], w)
	}
	return [][]byte{data[:4096], append(append(h, types...), strs...)}
}

// FuzzParseBTF feeds parseBTF and iterTarget arbitrary bytes: they may
// reject them but must never panic or index out of range.
func FuzzParseBTF(f *testing.F) {
	f.Add(synthBTF(synth{}))
	f.Add(synthBTF(synth{bo: binary.BigEndian}))
	f.Add(synthBTF(synth{anonCycle: true}))
	f.Add(synthBTF(synth{fdTypedefCycle: true}))
	f.Add(synthBTF(synth{anonFanout: true}))
	for _, seed := range kernelBTFSeeds(f) {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := parseBTF(data)
		if err != nil {
			return
		}
		if len(b.offs)*btfTypeLen > len(b.types) {
			t.Fatalf("%d types in %d bytes", len(b.offs), len(b.types))
		}
		_, _, _ = b.iterTarget()
		for id := range uint32(min(len(b.offs), 64)) + 1 {
			_, _ = b.sizeof(id)
			budget := maxMemberVisits
			_, _, _ = b.findMember(id, "x", 0, &budget)
		}
	})
}
