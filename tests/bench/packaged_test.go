package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// packagedUID is the user the packaged relayd stands for here (nobody):
// the .deb and the OpenWrt package run relayd as a user of its own with
// no capability at all.
const packagedUID = 65534

// relaydPackagedC is relayd as the packages install it: unprivileged,
// with no capability, beside the offload broker (relayd -offload-broker)
// that holds the kernel fast path for it, and every data-plane setting at
// its default (channel.fast_path auto). This is the column a donor gets
// without touching anything; the other relayd columns are each one mode
// forced on by root.
var relaydPackagedC = &contender{key: "relayd-packaged", name: "relayd as packaged (no capability, offload broker, defaults)", exact: true,
	start: startPackaged}

func startPackaged(ctx context.Context, _ testing.TB, e *env, n int) (*relay, error) {
	bin, err := e.relaydBinary()
	if err != nil {
		return nil, err
	}
	// A directory nobody can reach (t.TempDir is root's alone), holding
	// copies of the binaries and the ports file dpbench writes as nobody.
	dir, err := os.MkdirTemp("", "jnrelay-bench-packaged-")
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*relay, error) {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	dpbench := filepath.Join(dir, "dpbench")
	if err := copyExecutable(e.dpbench, dpbench); err != nil {
		return fail(err)
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		return fail(err)
	}
	if err := os.Chown(data, packagedUID, packagedUID); err != nil {
		return fail(err)
	}
	if err := e.topo.forwarding(true); err != nil {
		return fail(err)
	}
	socket := filepath.Join(dir, "offload.sock")
	// The broker as root, on the generators' core: it does nothing per
	// packet (the kernel forwards), only the set-up of each leg.
	broker, err := startProc(ctx, genCore, e.topo.nsR, nil, bin, "-offload-broker", socket, "-offload-user", strconv.Itoa(packagedUID))
	if err != nil {
		_ = e.topo.forwarding(false)
		return fail(err)
	}
	stopAll := func() {
		_, _ = broker.stop(10 * time.Second)
		_ = e.topo.forwarding(false)
		_ = os.RemoveAll(dir)
	}
	if err := waitUnixSocket(broker, socket, 30*time.Second); err != nil {
		stopAll()
		return nil, err
	}
	ports := filepath.Join(data, "ports")
	p, err := startProc(ctx, relayCore, e.topo.nsR, []string{"GOMAXPROCS=1"}, "setpriv",
		"--reuid="+strconv.Itoa(packagedUID), "--regid="+strconv.Itoa(packagedUID), "--clear-groups",
		"--inh-caps=-all", "--bounding-set=-all", "--no-new-privs",
		dpbench, "-listen", relayAddr, "-port-min", strconv.Itoa(relayPortMin), "-port-max", strconv.Itoa(relayPortMax),
		"-channels", strconv.Itoa(n), "-ports", ports, "-fast-path", "auto", "-offload-socket", socket)
	if err != nil {
		stopAll()
		return nil, err
	}
	r, err := readyDpbench(p, ports)
	if err != nil {
		stopAll()
		return nil, err
	}
	r.cleanup = stopAll
	return r, nil
}

// waitUnixSocket waits until something accepts connections at path, or p
// exits, or timeout passes.
func waitUnixSocket(p *proc, path string, timeout time.Duration) error {
	end := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			return c.Close()
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before listening at %s: %v; stderr: %s", p.name, path, p.err, p.stderr)
		case <-time.After(20 * time.Millisecond): // polling a path: no event to wait on
		}
		if time.Now().After(end) {
			return fmt.Errorf("%s not listening at %s after %v: %v; stderr: %s", p.name, path, timeout, err, p.stderr)
		}
	}
}

func copyExecutable(from, to string) error {
	b, err := os.ReadFile(from)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}
