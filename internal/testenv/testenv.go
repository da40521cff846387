// Package testenv decides whether a test whose prerequisites are missing
// skips (plain `go test`) or fails (under TCPSENTRY_E2E=1, as the README's
// test command and CI run it).
package testenv

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// E2E reports whether end-to-end prerequisites are mandatory.
func E2E() bool { return os.Getenv("TCPSENTRY_E2E") == "1" }

// Need skips or fails t when ok is false; why says what is missing.
func Need(t testing.TB, ok bool, why string) {
	t.Helper()
	if ok {
		return
	}
	if E2E() {
		t.Fatalf("prerequisite missing under TCPSENTRY_E2E=1: %s", why)
	}
	t.Skipf("skipping: %s (set TCPSENTRY_E2E=1 to make this a failure)", why)
}

// NeedRoot requires euid 0.
func NeedRoot(t testing.TB) {
	t.Helper()
	Need(t, os.Geteuid() == 0, "needs root")
}

// NeedTool requires an executable on PATH and returns its path.
func NeedTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	Need(t, err == nil, name+" not on PATH")
	return p
}

// DieWithParent makes cmd's process get SIGKILL when the test process
// dies, so that a test killed by its -timeout (which runs no cleanups)
// leaves no servers or daemons behind.
func DieWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
