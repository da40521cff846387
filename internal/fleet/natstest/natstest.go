// Package natstest runs Debian's nats-server as a three-node JetStream
// cluster on loopback ports, for the fleet's integration tests in several
// packages.
package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/tcpsentry/tcpsentry/internal/testenv"
)

// Cluster is a three-node JetStream cluster of Debian's nats-server on
// loopback ports.
type Cluster struct {
	URLs  []string
	procs []*exec.Cmd
}

// FreePorts returns n loopback ports that were free a moment ago.
func FreePorts(t testing.TB, n int) []int {
	t.Helper()
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// StartCluster starts the cluster (stopped when the test ends; the nodes'
// log tails are logged when it failed). Without nats-server the test is
// skipped, or fails under TCPSENTRY_E2E=1.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin := testenv.NeedTool(t, "nats-server")
	dir := t.TempDir()
	ports := FreePorts(t, 6)
	c := &Cluster{}
	for i := range 3 {
		var routes []string
		for j := range 3 {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+j]))
			}
		}
		conf := fmt.Sprintf(`server_name: tsfleet-n%d
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster { name: tsfleet, listen: 127.0.0.1:%d, routes: [%s] }
`, i, ports[i], filepath.Join(dir, fmt.Sprint("n", i)), ports[3+i], strings.Join(routes, ", "))
		path := filepath.Join(dir, fmt.Sprintf("n%d.conf", i))
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		log, err := os.Create(filepath.Join(dir, fmt.Sprintf("n%d.log", i)))
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "-c", path)
		testenv.DieWithParent(cmd)
		cmd.Stdout, cmd.Stderr = log, log
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		c.procs = append(c.procs, cmd)
		c.URLs = append(c.URLs, fmt.Sprintf("nats://127.0.0.1:%d", ports[i]))
	}
	t.Cleanup(func() {
		for _, p := range c.procs {
			if p.ProcessState == nil {
				_ = p.Process.Kill()
				_ = p.Wait()
			}
		}
		if t.Failed() {
			for i := range 3 {
				b, _ := os.ReadFile(filepath.Join(dir, fmt.Sprintf("n%d.log", i)))
				if len(b) > 3000 {
					b = b[len(b)-3000:]
				}
				t.Logf("node %d log tail:\n%s", i, b)
			}
		}
	})
	return c
}

// Kill stops node i abruptly (SIGKILL).
func (c *Cluster) Kill(i int) {
	_ = c.procs[i].Process.Signal(syscall.SIGKILL)
	_ = c.procs[i].Wait()
}
