package appliance

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Journal message ids systemd gives unit events (sd-messages.h).
const (
	msgUnitStarted   = "39f53479d3a045ac8e11786248231fbf"
	msgUnitRestart   = "5eb03494b6584870a536b337290809b3"
	msgProcessExited = "98e322203f7a4ed290d09fe03c09fe15"
)

// watchdogSec replaces the unit's 30 s in the test's drop-in, so a wedged
// relay is caught quickly.
const watchdogSec = 4

// findDeb returns the amd64 package to test: JNRELAY_DEB, else the one
// `make image` left in dist/. Without either the test is skipped, saying
// how to run it; JNRELAY_REQUIRE_APPLIANCE=1 (set by `make
// test-appliance`) turns that into a failure.
func findDeb(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("JNRELAY_DEB"); p != "" {
		return p
	}
	matches, _ := filepath.Glob(filepath.Join("..", "..", "dist", "jnrelay_*_amd64.deb"))
	if len(matches) == 1 {
		abs, err := filepath.Abs(matches[0])
		if err != nil {
			t.Fatal(err)
		}
		return abs
	}
	why := "no Debian package: run `make test-appliance` (it builds dist/jnrelay_*_amd64.deb with `make image`)"
	if len(matches) > 1 {
		why = "several packages in dist/: set JNRELAY_DEB or run `make image` after `rm -rf dist`"
	}
	if os.Getenv("JNRELAY_REQUIRE_APPLIANCE") == "1" {
		t.Fatal(why)
	}
	t.Skip("skipping: " + why)
	return ""
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("JNRELAY_REQUIRE_APPLIANCE") == "1" {
				t.Fatalf("%s not installed (tests/deps.sh installs it)", tool)
			}
			t.Skipf("skipping: %s not installed (tests/deps.sh installs it)", tool)
		}
	}
}

// TestDebianPackageUnderSystemd installs the .deb into a Debian rootfs,
// boots it with systemd-nspawn and checks, against the real systemd:
// relayd active after READY=1 with a STATUS= line, the provisioning socket
// handed over by socket activation, a configuration change through it
// surviving a SIGKILL (restarted by systemd), a wedged data plane caught
// by the watchdog and restarted, and a clean stop.
func TestDebianPackageUnderSystemd(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("skipping: needs root (systemd-nspawn)")
	}
	requireTools(t, "systemd-nspawn", "mmdebstrap", "nsenter")
	deb := findDeb(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	began := time.Now()
	step := func(what string) { t.Logf("%6.2fs %s", time.Since(began).Seconds(), what) }

	tarball := cachedRootfs(t)
	root := t.TempDir()
	if out, err := exec.Command("tar", "-xf", tarball, "-C", root).CombinedOutput(); err != nil {
		t.Fatalf("unpack rootfs: %v\n%s", err, out)
	}
	debData, err := os.ReadFile(deb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "root", "jnrelay.deb"), debData, 0o644); err != nil {
		t.Fatal(err)
	}
	step("rootfs ready")

	// Install as an image build would: no systemd running, so the
	// package enables its units for the next boot without starting them.
	install := exec.CommandContext(ctx, "systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--private-network", "-D", root,
		"dpkg", "-i", "/root/jnrelay.deb")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("dpkg -i: %v\n%s", err, out)
	}
	// The test's switches: a short watchdog, and the wedge trigger.
	dropin := filepath.Join(root, "etc", "systemd", "system", "relayd.service.d")
	if err := os.MkdirAll(dropin, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := "[Service]\nWatchdogSec=" + strconv.Itoa(watchdogSec) + "s\nEnvironment=RELAYD_TEST_WEDGE=1\n"
	if err := os.WriteFile(filepath.Join(dropin, "test.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	step("package installed")

	c := boot(ctx, t, root)
	j := c.follow(ctx)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("container journal:\n%s", j.dump())
		}
	})
	isRelayd := func(e entry) bool { return e.str("UNIT") == "relayd.service" }
	started := func(e entry) bool {
		return isRelayd(e) && e.str("MESSAGE_ID") == msgUnitStarted && e.str("JOB_RESULT") == "done"
	}
	// Type=notify: systemd logs "Started" only once relayd sent READY=1.
	if _, err := j.wait(ctx, "relayd started (READY=1)", 1, started); err != nil {
		t.Fatal(err)
	}
	step("relayd ready")
	st := c.show(ctx, "relayd.service", "ActiveState", "SubState", "StatusText", "NRestarts", "User", "Type")
	if st["ActiveState"] != "active" || st["SubState"] != "running" || st["Type"] != "notify" || st["User"] != "jnrelay" {
		t.Fatalf("relayd.service: %v", st)
	}
	if !strings.Contains(st["StatusText"], "channels") || !strings.Contains(st["StatusText"], "no XMPP service configured") {
		t.Errorf("STATUS= text %q, want the channel count and the missing XMPP service", st["StatusText"])
	}

	// Socket activation: the socket unit owns the socket and relayd took it.
	sock := c.show(ctx, "relayd-provision.socket", "ActiveState", "Listen")
	if sock["ActiveState"] != "active" || !strings.Contains(sock["Listen"], "/run/jnrelay/api.sock") {
		t.Fatalf("relayd-provision.socket: %v", sock)
	}
	if _, err := j.wait(ctx, "the activated API socket", 1, func(e entry) bool {
		return e.str("SYSLOG_IDENTIFIER") == "relayd" && strings.Contains(e.str("MESSAGE"), "provisioning API listening") &&
			strings.Contains(e.str("MESSAGE"), "systemd-activated")
	}); err != nil {
		t.Fatal(err)
	}
	if perm := strings.TrimSpace(c.must(ctx, "stat", "-c", "%a %U %G", "/run/jnrelay/api.sock")); perm != "660 root jnrelay-admin" {
		t.Errorf("api socket %q, want 660 root jnrelay-admin", perm)
	}
	// The socket's directory is root's even with relayd running: relayd
	// cannot swap the socket root talks to for one of its own.
	if perm := strings.TrimSpace(c.must(ctx, "stat", "-c", "%a %U %G", "/run/jnrelay")); perm != "755 root root" {
		t.Errorf("/run/jnrelay %q, want 755 root root", perm)
	}
	var status struct {
		Channels struct{ Capacity int } `json:"channels"`
	}
	if err := json.Unmarshal([]byte(c.must(ctx, "relayd", "status")), &status); err != nil || status.Channels.Capacity == 0 {
		t.Fatalf("relayd status over the activated socket: %+v %v", status, err)
	}
	step("socket activation checked")

	// A configuration change through the API, then a crash: systemd
	// restarts relayd, which comes back with the change.
	newCfg := `{"ports": {"min": 41000, "max": 41099}, "channel": {"max_kbps": 321}}`
	if err := os.WriteFile(filepath.Join(root, "root", "new.json"), []byte(newCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	c.must(ctx, "relayd", "config", "set", "/root/new.json")
	killed := func(e entry) bool {
		return isRelayd(e) && e.str("MESSAGE_ID") == msgProcessExited && e.str("EXIT_CODE") == "killed" && e.str("EXIT_STATUS") == "9"
	}
	c.must(ctx, "systemctl", "kill", "--kill-whom=main", "--signal=SIGKILL", "relayd.service")
	if _, err := j.wait(ctx, "relayd killed", 1, killed); err != nil {
		t.Fatal(err)
	}
	if _, err := j.wait(ctx, "relayd restarted after the crash", 2, started); err != nil {
		t.Fatal(err)
	}
	if n := c.show(ctx, "relayd.service", "NRestarts")["NRestarts"]; n != "1" {
		t.Errorf("NRestarts %s after one crash", n)
	}
	var cfg struct {
		Ports   struct{ Min, Max int } `json:"ports"`
		Channel struct {
			MaxKbps int `json:"max_kbps"`
		} `json:"channel"`
	}
	if err := json.Unmarshal([]byte(c.must(ctx, "relayd", "config", "get")), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Ports.Min != 41000 || cfg.Ports.Max != 41099 || cfg.Channel.MaxKbps != 321 {
		t.Fatalf("configuration after the crash: %+v", cfg)
	}
	if owner := strings.TrimSpace(c.must(ctx, "stat", "-c", "%U %a", "/etc/jnrelay/relayd.json")); !strings.HasPrefix(owner, "jnrelay ") {
		t.Errorf("config file owner and mode %q", owner)
	}
	step("crash restarted with the configuration intact")

	// A wedged data plane: the health check fails, the pings stop, and
	// systemd's watchdog kills and restarts relayd.
	wedgedAt := time.Now()
	c.must(ctx, "systemctl", "kill", "--kill-whom=main", "--signal=SIGUSR2", "relayd.service")
	if _, err := j.wait(ctx, "relayd's failed health check", 1, func(e entry) bool {
		return e.str("SYSLOG_IDENTIFIER") == "relayd" && strings.Contains(e.str("MESSAGE"), "health check failed")
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.wait(ctx, "the watchdog timeout", 1, func(e entry) bool {
		return isRelayd(e) && strings.Contains(e.str("MESSAGE"), "Watchdog timeout")
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := j.wait(ctx, "relayd restarted by the watchdog", 3, started); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(wedgedAt); took > time.Duration(watchdogSec)*time.Second+20*time.Second {
		t.Errorf("watchdog restart took %s with WatchdogSec=%ds", took, watchdogSec)
	}
	if n := j.count(func(e entry) bool { return isRelayd(e) && e.str("MESSAGE_ID") == msgUnitRestart }); n != 2 {
		t.Errorf("%d restarts scheduled, want 2 (crash, watchdog)", n)
	}
	step("wedged data plane restarted by the watchdog")

	// A clean stop: SIGTERM drains (no calls here) and relayd exits 0.
	c.must(ctx, "systemctl", "stop", "relayd.service")
	st = c.show(ctx, "relayd.service", "ActiveState", "Result", "ExecMainStatus")
	if st["ActiveState"] != "inactive" || st["Result"] != "success" || st["ExecMainStatus"] != "0" {
		t.Fatalf("after stop: %v", st)
	}
	step("stopped cleanly")

	// The kernel data plane. The container gets an Ethernet link (a veth
	// pair) to attach the eBPF program to, and forwarding.
	for _, args := range [][]string{
		{"ip", "link", "add", "jn0", "type", "veth", "peer", "name", "jn1"},
		{"ip", "link", "set", "jn0", "up"}, {"ip", "link", "set", "jn1", "up"},
		{"sysctl", "-qw", "net.ipv4.ip_forward=1"},
	} {
		cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.leader), "-n"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s in the container's network: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "root", "offload.json"), []byte(`{"channel": {"fast_path": "ebpf"}}`), 0o644); err != nil {
		t.Fatal(err)
	}

	// As installed: relayd holds no capability, and gets the fast path
	// from the offload broker, which its socket starts on relayd's first
	// connection, under its own unit (a dynamic user with CAP_BPF and
	// CAP_NET_ADMIN, bpf(2) allowed).
	c.must(ctx, "relayd", "config", "set", "/root/offload.json")
	if _, err := j.wait(ctx, "the eBPF fast path on through the offload broker", 1, func(e entry) bool {
		return e.str("SYSLOG_IDENTIFIER") == "relayd" && strings.Contains(e.str("MESSAGE"), "in-kernel fast path on") &&
			strings.Contains(e.str("MESSAGE"), "eBPF program on tc ingress") && strings.Contains(e.str("MESSAGE"), "through the offload broker")
	}); err != nil {
		t.Fatal(err)
	}
	broker := c.show(ctx, "relayd-offload.service", "ActiveState", "SubState", "DynamicUser")
	if broker["ActiveState"] != "active" || broker["DynamicUser"] != "yes" {
		t.Fatalf("relayd-offload.service: %v", broker)
	}
	pid := c.show(ctx, "relayd.service", "MainPID")["MainPID"]
	for _, capLine := range []string{"CapPrm:\t0000000000000000", "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000"} {
		if status := c.must(ctx, "cat", "/proc/"+pid+"/status"); !strings.Contains(status, capLine) {
			t.Errorf("relayd (pid %s) lacks %q:\n%s", pid, capLine, status)
		}
	}
	if perm := strings.TrimSpace(c.must(ctx, "stat", "-c", "%a %U %G", "/run/jnrelay/offload.sock")); perm != "660 root jnrelay" {
		t.Errorf("offload socket %q, want 660 root jnrelay", perm)
	}
	c.must(ctx, "systemctl", "stop", "relayd.service")
	if _, err := j.wait(ctx, "the broker removing relayd's table", 1, func(e entry) bool {
		return e.str("_SYSTEMD_UNIT") == "relayd-offload.service" && strings.Contains(e.str("MESSAGE"), "client gone, its table removed")
	}); err != nil {
		t.Fatal(err)
	}
	step("eBPF fast path through the offload broker, relayd without capabilities")

	// Opted in as install.md says with the drop-in the package ships
	// (steered ports need it): relayd may open the kernel objects
	// itself, and still asks the broker first.
	c.must(ctx, "install", "-D", "-m", "0644", "/usr/share/jnrelay/relayd-kernel-offload.conf",
		"/etc/systemd/system/relayd.service.d/kernel-offload.conf")
	c.must(ctx, "systemctl", "daemon-reload")
	c.must(ctx, "systemctl", "start", "relayd.service")
	if _, err := j.wait(ctx, "the eBPF fast path on under the unit", 2, func(e entry) bool {
		return e.str("SYSLOG_IDENTIFIER") == "relayd" && strings.Contains(e.str("MESSAGE"), "in-kernel fast path on") &&
			strings.Contains(e.str("MESSAGE"), "eBPF program on tc ingress")
	}); err != nil {
		t.Fatal(err)
	}
	c.must(ctx, "systemctl", "restart", "relayd.service")
	if _, err := j.wait(ctx, "the eBPF fast path on again after a restart", 3, func(e entry) bool {
		return e.str("SYSLOG_IDENTIFIER") == "relayd" && strings.Contains(e.str("MESSAGE"), "in-kernel fast path on")
	}); err != nil {
		t.Fatal(err)
	}
	c.must(ctx, "systemctl", "stop", "relayd.service")
	step("eBPF fast path under the unit with the kernel-offload drop-in")
}
