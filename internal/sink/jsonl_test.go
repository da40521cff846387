package sink

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tcpsentry/tcpsentry/internal/alert"
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
