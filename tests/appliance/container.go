// Package appliance proves the Debian package under a real systemd: a
// Debian rootfs (mmdebstrap, cached) with the .deb installed boots in
// systemd-nspawn, and the test drives and watches relayd's units from the
// host (nsenter into the container, its journal followed as JSON).
package appliance

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// rootfsPackages are installed into the test rootfs besides the base
// system: a booting systemd and what the package's scripts use.
var rootfsPackages = []string{"systemd", "systemd-sysv", "dbus", "procps"}

// sourcesFile is the host's apt sources, pasted into the rootfs (no mirror
// is named here: the rootfs comes from wherever the host's packages do).
const sourcesFile = "/etc/apt/sources.list.d/debian.sources"

// cachedRootfs returns a tarball of a Debian bookworm rootfs with
// rootfsPackages, building it with mmdebstrap on first use. It is cached
// under JNRELAY_CACHE (default /var/cache/jnrelay-test), keyed by the
// package list.
func cachedRootfs(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("JNRELAY_CACHE")
	if dir == "" {
		dir = "/var/cache/jnrelay-test"
	}
	sum := sha256.Sum256([]byte(strings.Join(rootfsPackages, ",")))
	path := filepath.Join(dir, "rootfs-bookworm-"+hex.EncodeToString(sum[:6])+".tar")
	if _, err := os.Stat(path); err == nil {
		return path
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	sources := sourcesFile
	if _, err := os.Stat(sources); err != nil {
		sources = "/etc/apt/sources.list"
	}
	tmp := path + ".part"
	began := time.Now()
	cmd := exec.Command("mmdebstrap", "--variant=apt", "--format=tar", "--include="+strings.Join(rootfsPackages, ","), "bookworm", tmp, sources)
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		t.Fatalf("mmdebstrap: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	t.Logf("built rootfs %s in %s", path, time.Since(began).Round(time.Second))
	return path
}

// container is a booted systemd-nspawn container.
type container struct {
	t      *testing.T
	root   string
	cmd    *exec.Cmd
	done   chan struct{}
	leader int // the container's PID 1, as the host sees it
	out    *harness.SyncBuffer
	jour   *journal
}

// boot starts systemd in root and waits until the container's PID 1 is
// known. The container has only a loopback network. It is powered off
// (then killed if it hangs) at cleanup.
func boot(ctx context.Context, t *testing.T, root string) *container {
	t.Helper()
	c := &container{t: t, root: root, done: make(chan struct{}), out: &harness.SyncBuffer{}}
	// CAP_BPF and bpf(2) are in the container's bounding set and filter
	// so that the kernel data plane's drop-in can be tried; the unit
	// itself grants relayd none of it.
	c.cmd = exec.Command("systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--private-network",
		"--capability=CAP_BPF", "--system-call-filter=bpf", "--console=pipe", "-D", root, "--boot")
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() { c.cmd.Wait(); close(c.done) }()
	t.Cleanup(c.shutdown)
	// nspawn forks the container's init: wait for that child to appear
	// and to have become systemd (before that it is nspawn's own child,
	// still setting up the container's mounts: entering its namespaces
	// then would see the wrong file system).
	pid := c.cmd.Process.Pid
	for c.leader == 0 {
		raw, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(raw)); len(f) > 0 {
			child, _ := strconv.Atoi(f[0])
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child)); strings.TrimSpace(string(comm)) == "systemd" {
				c.leader = child
				break
			}
		}
		select {
		case <-c.done:
			t.Fatalf("systemd-nspawn exited early: %v\n%s", c.cmd.ProcessState, c.out.String())
		case <-ctx.Done():
			t.Fatalf("container init did not start: %v\n%s", ctx.Err(), c.out.String())
		case <-time.After(20 * time.Millisecond): // a fork has no event to await from here
		}
	}
	return c
}

// shutdown powers the container off, waits for nspawn, and kills the
// process group if it does not end.
func (c *container) shutdown() {
	if c.jour != nil {
		c.jour.stop()
	}
	_ = exec.Command("nsenter", "-t", strconv.Itoa(c.leader), "-a", "systemctl", "poweroff", "--no-block").Run()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.done
	}
	if c.t.Failed() {
		c.t.Logf("container console:\n%s", c.out.String())
	}
}

// exec runs a command inside the container (all its namespaces) and
// returns its standard output; an error carries standard error.
func (c *container) exec(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-a"}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s: %w: %s%s", strings.Join(args, " "), err, stderr.String(), stdout.String())
	}
	return stdout.String(), nil
}

// must is exec that fails the test on error.
func (c *container) must(ctx context.Context, args ...string) string {
	c.t.Helper()
	out, err := c.exec(ctx, args...)
	if err != nil {
		c.t.Fatal(err)
	}
	return out
}

// show returns properties of a unit (systemctl show).
func (c *container) show(ctx context.Context, unit string, props ...string) map[string]string {
	c.t.Helper()
	out := c.must(ctx, append([]string{"systemctl", "show", unit}, prefix("-p", props)...)...)
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

func prefix(flag string, vals []string) []string {
	var out []string
	for _, v := range vals {
		out = append(out, flag, v)
	}
	return out
}

// entry is one journal record (journalctl -o json).
type entry map[string]any

func (e entry) str(k string) string { s, _ := e[k].(string); return s }

// journal follows the container's journal from boot.
type journal struct {
	cmd *exec.Cmd

	mu      sync.Mutex
	entries []entry
	changed chan struct{} // closed and replaced on each new entry
	err     error
}

// follow starts following the container's journal (everything since
// boot, then new entries as they come).
func (c *container) follow(ctx context.Context) *journal {
	c.t.Helper()
	j := &journal{changed: make(chan struct{})}
	j.cmd = exec.Command("nsenter", "-t", strconv.Itoa(c.leader), "-a", "journalctl", "-b", "-f", "-n", "all", "-o", "json")
	pipe, err := j.cmd.StdoutPipe()
	if err != nil {
		c.t.Fatal(err)
	}
	if err := j.cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var e entry
			if json.Unmarshal(sc.Bytes(), &e) != nil {
				continue
			}
			j.mu.Lock()
			j.entries = append(j.entries, e)
			close(j.changed)
			j.changed = make(chan struct{})
			j.mu.Unlock()
		}
		j.mu.Lock()
		j.err = errors.New("journal follower ended")
		close(j.changed)
		j.mu.Unlock()
	}()
	c.jour = j
	return j
}

func (j *journal) stop() {
	if j.cmd.Process != nil {
		j.cmd.Process.Kill()
		j.cmd.Wait()
	}
}

// wait returns the n-th entry (1-based) matching match, waiting for it
// until ctx is done.
func (j *journal) wait(ctx context.Context, what string, n int, match func(entry) bool) (entry, error) {
	for {
		j.mu.Lock()
		seen := 0
		for _, e := range j.entries {
			if match(e) {
				if seen++; seen == n {
					j.mu.Unlock()
					return e, nil
				}
			}
		}
		changed, err := j.changed, j.err
		j.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("waiting for %s: %w", what, err)
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for %s (#%d): %w", what, n, ctx.Err())
		}
	}
}

// count is how many entries match so far.
func (j *journal) count(match func(entry) bool) int {
	j.mu.Lock()
	defer j.mu.Unlock()
	n := 0
	for _, e := range j.entries {
		if match(e) {
			n++
		}
	}
	return n
}

// dump is the journal's messages, for a failing test.
func (j *journal) dump() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	var b strings.Builder
	for _, e := range j.entries {
		fmt.Fprintf(&b, "%s: %s\n", e.str("SYSLOG_IDENTIFIER"), e.str("MESSAGE"))
	}
	return b.String()
}
