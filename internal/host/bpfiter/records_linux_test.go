package bpfiter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"testing"
	"testing/iotest"

	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// encode lays records out as the BPF program writes them.
func encode(fds ...FD) []byte {
	var b []byte
	for _, fd := range fds {
		b = binary.NativeEndian.AppendUint32(b, uint32(fd.TGID))
		b = binary.NativeEndian.AppendUint32(b, uint32(fd.FD))
		b = binary.NativeEndian.AppendUint64(b, fd.Inode)
	}
	return b
}

func TestReadRecords(t *testing.T) {
	inOrder := []FD{{1, 3, 10}, {1, 4, 11}, {7, 0, 12}, {7, 9, 1 << 40}, {-2, 5, 13}}
	// A thread with its own file table is a second run of tgid 1; a
	// run that stops ascending is the other way a pair can repeat.
	revisit := []FD{{1, 3, 10}, {1, 4, 11}, {7, 0, 12}, {1, 3, 99}, {1, 5, 14}}
	descending := []FD{{1, 4, 11}, {1, 3, 10}, {1, 4, 98}}
	for _, tc := range []struct {
		name string
		in   []FD
		want []FD
	}{
		{"empty", nil, []FD{}},
		{"in order", inOrder, inOrder},
		{"tgid revisited", revisit, []FD{{1, 3, 10}, {1, 4, 11}, {7, 0, 12}, {1, 5, 14}}},
		{"fd not ascending", descending, []FD{{1, 4, 11}, {1, 3, 10}}},
	} {
		data := encode(tc.in...)
		readers := map[string]func() io.Reader{
			"whole":    func() io.Reader { return bytes.NewReader(data) },
			"one byte": func() io.Reader { return iotest.OneByteReader(bytes.NewReader(data)) },
			"data+EOF": func() io.Reader { return iotest.DataErrReader(iotest.HalfReader(bytes.NewReader(data))) },
		}
		for rname, r := range readers {
			got, err := readRecords(context.Background(), r(), 100)
			if err != nil {
				t.Fatalf("%s/%s: %v", tc.name, rname, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("%s/%s: got %v, want %v", tc.name, rname, got, tc.want)
			}
		}
	}
}

func TestReadRecordsErrors(t *testing.T) {
	data := encode(FD{1, 3, 10}, FD{1, 4, 11}, FD{1, 5, 12})
	if _, err := readRecords(context.Background(), bytes.NewReader(data[:len(data)-3]), 100); err == nil {
		t.Error("truncated record: no error")
	}
	if _, err := readRecords(context.Background(), bytes.NewReader(data), 2); err == nil {
		t.Error("over the limit: no error")
	}
	boom := errors.New("boom")
	if _, err := readRecords(context.Background(), iotest.ErrReader(boom), 100); !errors.Is(err, boom) {
		t.Errorf("read error: got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := readRecords(ctx, bytes.NewReader(data), 100); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: got %v", err)
	}
}

func TestSocketFDsCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := SocketFDs(ctx)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want ErrUnavailable and context.Canceled", err)
	}
}

// TestFindMember checks the descent into anonymous members that
// __bpf_md_ptr and the kernel's anonymous unions need.
func TestFindMember(t *testing.T) {
	u64 := &btf.Int{Name: "u64", Size: 8}
	target := &btf.Struct{Name: "seq_file", Size: 8}
	ptr := &btf.Pointer{Target: &btf.Typedef{Name: "seq_t", Type: target}}
	inner := &btf.Union{Size: 8, Members: []btf.Member{
		{Name: "seq", Type: &btf.Const{Type: ptr}},
		{Name: "", Type: u64, BitfieldSize: 64},
	}}
	s := &btf.Struct{Name: "outer", Size: 24, Members: []btf.Member{
		{Name: "a", Type: u64},
		{Name: "", Type: &btf.Struct{Size: 16, Members: []btf.Member{
			{Name: "b", Type: u64},
			{Name: "", Type: inner, Offset: 64},
		}}, Offset: 64},
	}}
	f, got, err := pointerMember(s, "seq")
	if err != nil || f != (field{off: 16, size: asm.DWord}) || got != target {
		t.Errorf("seq: got %+v %v %v", f, got, err)
	}
	if f, err := scalarMember(s, "b"); err != nil || f != (field{off: 8, size: asm.DWord}) {
		t.Errorf("b: got %+v %v", f, err)
	}
	if _, err := scalarMember(s, "seq"); err == nil {
		t.Error("pointer accepted as integer")
	}
	if _, _, err := pointerMember(s, "a"); err == nil {
		t.Error("integer accepted as pointer")
	}
	if _, err := scalarMember(s, "missing"); err == nil {
		t.Error("missing member found")
	}
}

// TestResolveLayoutKernel reads the running kernel's BTF, which needs no
// privilege, and checks the context members the iterator ABI fixes.
func TestResolveLayoutKernel(t *testing.T) {
	spec, err := btf.LoadKernelSpec()
	why := "kernel BTF"
	if err != nil {
		why += ": " + err.Error()
	}
	testenv.Need(t, err == nil, why)
	l, err := resolveLayout(spec)
	if err != nil {
		t.Fatal(err)
	}
	// bpf_iter__task_file pads every member to 64 bits.
	want := [4]int16{0, 8, 16, 24}
	if got := [4]int16{l.ctxMeta.off, l.ctxTask.off, l.ctxFD.off, l.ctxFile.off}; got != want {
		t.Errorf("context offsets %v, want %v", got, want)
	}
	if l.inodeMode.size != asm.Half || l.taskTGID.size != asm.Word {
		t.Errorf("i_mode or tgid size: %+v", l)
	}
	t.Logf("%+v", l)
}
