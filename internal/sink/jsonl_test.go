package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tcpsentry/tcpsentry/internal/alert"
	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

func readLines(t *testing.T, path string) []alert.Alert {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []alert.Alert
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		var a alert.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("%s:%d: %v", path, n, err)
		}
		out = append(out, a)
	}
	return out
}

func TestJSONLReopenFollowsLogrotate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "alerts.jsonl")
	j, err := NewJSONL(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	for _, id := range []string{"a", "b"} {
		if err := j.Send(ctx, testAlert(id)); err != nil {
			t.Fatal(err)
		}
	}
	// logrotate: rename, then SIGHUP → Reopen.
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := j.Send(ctx, testAlert("c")); err != nil { // still the renamed file
		t.Fatal(err)
	}
	if err := j.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := j.Send(ctx, testAlert("d")); err != nil {
		t.Fatal(err)
	}
	ids := func(as []alert.Alert) string {
		var s []string
		for _, a := range as {
			s = append(s, a.ID)
		}
		return strings.Join(s, ",")
	}
	if got := ids(readLines(t, path+".1")); got != "a,b,c" {
		t.Errorf("rotated file has %s, want a,b,c", got)
	}
	if got := ids(readLines(t, path)); got != "d" {
		t.Errorf("new file has %s, want d", got)
	}
}

// TestJSONLFullDisk writes to /dev/full, the kernel's always-full device:
// the error must say so and name the file, and the sink keeps working.
func TestJSONLFullDisk(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full")
	}
	j, err := NewJSONL("/dev/full")
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for range 2 {
		err = j.Send(context.Background(), testAlert("x"))
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "/dev/full") {
			t.Fatalf("Send to a full disk: %v, want ENOSPC naming the file", err)
		}
	}
}

// TestJSONLPartialWriteIsCutOff fills a one-page tmpfs so that only part of
// the next line fits: the partial line must be removed again, so the file
// stays valid JSON lines, and the error names the file.
func TestJSONLPartialWriteIsCutOff(t *testing.T) {
	testenv.NeedRoot(t)
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4k", "tcpsentry-sinks-test", mnt).CombinedOutput(); err != nil {
		testenv.Need(t, false, fmt.Sprintf("mount tmpfs: %v %s", err, out))
	}
	t.Cleanup(func() { _ = exec.Command("umount", mnt).Run() })
	path := filepath.Join(mnt, "alerts.jsonl")
	j, err := NewJSONL(path)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var sent int
	for i := 0; i < 100; i++ {
		if err = j.Send(context.Background(), testAlert("a"+itoa(i))); err != nil {
			break
		}
		sent++
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), path) {
		t.Fatalf("after %d alerts: %v, want ENOSPC naming %s", sent, err, path)
	}
	fi, _ := os.Stat(path)
	if got := len(readLines(t, path)); got != sent {
		t.Errorf("%d complete lines, want %d", got, sent)
	}
	b, _ := os.ReadFile(path)
	if len(b) == 0 || b[len(b)-1] != '\n' || int64(len(b)) != fi.Size() {
		t.Errorf("file ends in a torn line (%d bytes, last %q)", len(b), b[max(0, len(b)-20):])
	}
	if fi.Size() >= 4096 {
		t.Logf("note: the first %d bytes filled the page exactly", fi.Size())
	}
}
