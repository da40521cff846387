//go:build linux

package bpfiter

import (
	"fmt"
	"math"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
)

// resolveLayout reads the layout from kernel BTF. It follows the pointer
// types of the context members (task → task_struct, file → file, f_inode →
// inode) instead of looking those structs up by name, so a kernel that
// renamed or duplicated one of them still resolves to the type the verifier
// will use.
func resolveLayout(spec *btf.Spec) (layout, error) {
	var l layout
	var ctx *btf.Struct
	if err := spec.TypeByName("bpf_iter__task_file", &ctx); err != nil {
		return l, fmt.Errorf("kernel BTF: struct bpf_iter__task_file: %w", err)
	}

	var (
		meta, task, file, inode *btf.Struct
		err                     error
	)
	// Each step depends on the struct the one before it found, so stop at
	// the first failure.
	for _, step := range []func() error{
		func() (e error) { l.ctxMeta, meta, e = pointerMember(ctx, "meta"); return },
		func() (e error) { l.ctxTask, task, e = pointerMember(ctx, "task"); return },
		func() (e error) { l.ctxFD, e = scalarMember(ctx, "fd"); return },
		func() (e error) { l.ctxFile, file, e = pointerMember(ctx, "file"); return },
		func() (e error) { l.metaSeq, _, e = pointerMember(meta, "seq"); return },
		func() (e error) { l.taskTGID, e = scalarMember(task, "tgid"); return },
		func() (e error) { l.fileInode, inode, e = pointerMember(file, "f_inode"); return },
		func() (e error) { l.inodeMode, e = scalarMember(inode, "i_mode"); return },
		func() (e error) { l.inodeIno, e = scalarMember(inode, "i_ino"); return },
	} {
		if err = step(); err != nil {
			return l, fmt.Errorf("kernel BTF: %w", err)
		}
	}
	// The program copies these into a fixed record; wider members would
	// be silently truncated.
	if l.ctxFD.size > asm.Word || l.taskTGID.size > asm.Word {
		return l, fmt.Errorf("kernel BTF: fd or tgid wider than 32 bits")
	}
	return l, nil
}

// findMember looks name up in a struct or union, descending into anonymous
// members: the iterator context wraps each pointer in an anonymous union
// (__bpf_md_ptr) to pad it to 64 bits, and kernel structs use anonymous
// unions freely. The returned offset is in bits from the start of t.
func findMember(t btf.Type, name string) (btf.Member, bool) {
	var members []btf.Member
	switch c := btf.UnderlyingType(t).(type) {
	case *btf.Struct:
		members = c.Members
	case *btf.Union:
		members = c.Members
	default:
		return btf.Member{}, false
	}
	for _, m := range members {
		if m.Name == name {
			return m, true
		}
		if m.Name == "" {
			if inner, ok := findMember(m.Type, name); ok {
				inner.Offset += m.Offset
				return inner, true
			}
		}
	}
	return btf.Member{}, false
}

// memberField resolves name in s to a byte offset that fits a BPF load's
// 16-bit displacement, and the member's byte size.
func memberField(s *btf.Struct, name string) (field, btf.Type, error) {
	m, ok := findMember(s, name)
	if !ok {
		return field{}, nil, fmt.Errorf("struct %s has no member %s", s.Name, name)
	}
	if m.BitfieldSize != 0 || m.Offset%8 != 0 {
		return field{}, nil, fmt.Errorf("%s.%s is a bitfield", s.Name, name)
	}
	off := m.Offset.Bytes()
	if off > math.MaxInt16 {
		return field{}, nil, fmt.Errorf("%s.%s at offset %d is out of reach of one load", s.Name, name, off)
	}
	n, err := btf.Sizeof(m.Type)
	if err != nil {
		return field{}, nil, fmt.Errorf("%s.%s: %w", s.Name, name, err)
	}
	size, ok := loadSize(n)
	if !ok {
		return field{}, nil, fmt.Errorf("%s.%s has size %d", s.Name, name, n)
	}
	return field{off: int16(off), size: size}, m.Type, nil
}

// scalarMember resolves an integer member.
func scalarMember(s *btf.Struct, name string) (field, error) {
	f, t, err := memberField(s, name)
	if err != nil {
		return f, err
	}
	switch btf.UnderlyingType(t).(type) {
	case *btf.Int, *btf.Enum:
		return f, nil
	}
	return f, fmt.Errorf("%s.%s is not an integer", s.Name, name)
}

// pointerMember resolves a member that points to a struct and returns that
// struct too.
func pointerMember(s *btf.Struct, name string) (field, *btf.Struct, error) {
	f, t, err := memberField(s, name)
	if err != nil {
		return f, nil, err
	}
	p, ok := btf.UnderlyingType(t).(*btf.Pointer)
	if !ok || f.size != asm.DWord {
		return f, nil, fmt.Errorf("%s.%s is not a 64-bit pointer", s.Name, name)
	}
	target, ok := btf.UnderlyingType(p.Target).(*btf.Struct)
	if !ok {
		return f, nil, fmt.Errorf("%s.%s does not point to a struct", s.Name, name)
	}
	return f, target, nil
}
