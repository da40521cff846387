package bpfiter

import (
	"os"
	"testing"
	"unsafe"

	"github.com/cilium/ebpf/btf"

	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// kernelBTF reads the running kernel's BTF (no privilege needed).
func kernelBTF(tb testing.TB) []byte {
	tb.Helper()
	data, err := os.ReadFile(kernelBTFPath)
	why := "kernel BTF"
	if err != nil {
		why += ": " + err.Error()
	}
	testenv.Need(tb, err == nil, why)
	return data
}

// ciliumTarget is what the cilium path computes from kernel BTF: the
// layout, and the ID its AttachTo: "task_file" resolves to.
func ciliumTarget(tb testing.TB, spec *btf.Spec) (layout, uint32) {
	tb.Helper()
	l, err := resolveLayout(spec)
	if err != nil {
		tb.Fatal(err)
	}
	var fn *btf.Func
	if err := spec.TypeByName(attachFuncName, &fn); err != nil {
		tb.Fatal(err)
	}
	id, err := spec.TypeID(fn)
	if err != nil {
		tb.Fatal(err)
	}
	return l, uint32(id)
}

// TestIterTargetMatchesCilium checks the raw path resolves exactly what
// cilium/ebpf resolves from the same kernel.
func TestIterTargetMatchesCilium(t *testing.T) {
	data := kernelBTF(t)
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		t.Fatal(err)
	}
	wantL, wantID := ciliumTarget(t, spec)

	b, err := parseBTF(data)
	if err != nil {
		t.Fatal(err)
	}
	l, id, err := b.iterTarget()
	if err != nil {
		t.Fatal(err)
	}
	if l != wantL {
		t.Errorf("layout\n%+v, cilium\n%+v", l, wantL)
	}
	if id != wantID {
		t.Errorf("attach ID %d, cilium %d", id, wantID)
	}
	if last, err := spec.TypeID(mustType(t, spec, len(b.offs))); err != nil || int(last) != len(b.offs) {
		t.Errorf("%d types indexed; cilium's last type ID is %d (%v)", len(b.offs), last, err)
	}
	t.Logf("%d types, attach ID %d, %+v", len(b.offs), id, l)
}

// mustType is cilium's type with ID id.
func mustType(tb testing.TB, spec *btf.Spec, id int) btf.Type {
	tb.Helper()
	typ, err := spec.TypeByID(btf.TypeID(id))
	if err != nil {
		tb.Fatal(err)
	}
	return typ
}

// TestAttrLayout pins the bpf_attr structs to the uapi sizes and offsets.
func TestAttrLayout(t *testing.T) {
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the raw path is 64-bit only")
	}
	var p progLoadAttr
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"prog_load size", unsafe.Sizeof(p), 120},
		{"insns", unsafe.Offsetof(p.insns), 8},
		{"log_buf", unsafe.Offsetof(p.logBuf), 32},
		{"prog_name", unsafe.Offsetof(p.progName), 48},
		{"expected_attach_type", unsafe.Offsetof(p.expectedAttachType), 68},
		{"func_info", unsafe.Offsetof(p.funcInfo), 80},
		{"line_info", unsafe.Offsetof(p.lineInfo), 96},
		{"attach_btf_id", unsafe.Offsetof(p.attachBTFID), 108},
		{"attach_btf_obj_fd", unsafe.Offsetof(p.attachBTFObjFd), 112},
		{"link_create size", unsafe.Sizeof(linkCreateAttr{}), 32},
		{"iter_info", unsafe.Offsetof(linkCreateAttr{}.iterInfo), 16},
		{"iter_create size", unsafe.Sizeof(iterCreateAttr{}), 8},
	} {
		if c.got != c.want {
			t.Errorf("%s: %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestLogTail(t *testing.T) {
	log := []byte("a\nb\nc\nd\n\x00garbage")
	if got := logTail(log, 2); got != "c\nd" {
		t.Errorf("got %q", got)
	}
	if got := logTail(make([]byte, 8), 2); got != "" {
		t.Errorf("empty log: %q", got)
	}
}

// BenchmarkKernelBTF is the BTF half of SocketFDs on each path: read and
// resolve the layout and attach target. cilium's includes the decoding
// its program load then reuses from the cache.
func BenchmarkKernelBTF(b *testing.B) {
	kernelBTF(b)
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, _, err := kernelIterTarget(kernelBTFPath); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("raw-parse-only", func(b *testing.B) {
		data := kernelBTF(b)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := parseBTF(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cilium", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			spec, err := btf.NewCache().Kernel()
			if err != nil {
				b.Fatal(err)
			}
			ciliumTarget(b, spec)
		}
	})
	b.Run("cilium-decode-only", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := btf.NewCache().Kernel(); err != nil {
				b.Fatal(err)
			}
		}
	})
}
