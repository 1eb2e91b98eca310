package packages

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// initStubs stands in for OpenWrt's rc.common, UCI and procd helpers: UCI
// options come from UCI_<option> variables (unset = the script's
// default), procd calls are written to $PROCD_LOG one per line.
const initStubs = `
config_load() { :; }
config_get() { eval "$1=\${UCI_$3-\$4}"; }
config_get_bool() { config_get "$@"; }
network_get_ipaddr() { [ -n "$LAN_ADDR" ] || return 1; eval "$1=\$LAN_ADDR"; }
procd_open_instance() { echo "open $*" >>"$PROCD_LOG"; }
procd_close_instance() { echo "close" >>"$PROCD_LOG"; }
procd_set_param() { echo "set $*" >>"$PROCD_LOG"; }
procd_append_param() { echo "append $*" >>"$PROCD_LOG"; }
procd_add_jail() { echo "jail $*" >>"$PROCD_LOG"; }
procd_add_jail_mount() { echo "mount $*" >>"$PROCD_LOG"; }
procd_add_jail_mount_rw() { echo "mount_rw $*" >>"$PROCD_LOG"; }
procd_open_data() { echo "data" >>"$PROCD_LOG"; }
procd_close_data() { echo "end data" >>"$PROCD_LOG"; }
json_add_array() { echo "array $*" >>"$PROCD_LOG"; }
json_close_array() { echo "end array" >>"$PROCD_LOG"; }
json_add_object() { echo "object" >>"$PROCD_LOG"; }
json_close_object() { echo "end object" >>"$PROCD_LOG"; }
json_add_string() { echo "string $*" >>"$PROCD_LOG"; }
`

// initRun is one start of the OpenWrt init script's root part in a
// scratch tree, as relayd's user 65534 (nobody).
type initRun struct {
	t                 *testing.T
	base, script, log string
	lan               string // the LAN's address network_get_ipaddr gives
	prog              string // the init script's PROG (relayd)
}

func newInitRun(t *testing.T) *initRun {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the init script chowns, and root is who must not be fooled")
	}
	needTool(t, "dash", "dash")
	base := t.TempDir() // root's, 0700, under sticky /tmp
	for _, d := range []string{"etc", "run", "share", "elsewhere"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(base, "share", "default.json"), []byte("{}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return &initRun{t: t, base: base, script: filepath.Join(repoRoot(t), "image", "openwrt", "jnrelay.init"), log: filepath.Join(base, "procd.log"), lan: "192.168.1.1", prog: "false"}
}

func (r *initRun) path(p string) string { return filepath.Join(r.base, p) }

// start runs start_service with the UCI options given (option=value) and
// returns what it told procd and its output.
func (r *initRun) start(uci ...string) (procd, out string, err error) {
	r.t.Helper()
	os.Remove(r.log)
	script := initStubs + fmt.Sprintf(`
. %q
RUN_DIR=%q
OFFLOAD_DIR=%q
PID_FILE=%q
DEFAULT_CONFIG=%q
JNRELAY_USER=65534
PROG=%q
start_service
`, r.script, r.path("run/jnrelay"), r.path("run/jnrelay-offload"), r.path("run/jnrelay.pid"), r.path("share/default.json"), r.prog)
	cmd := exec.Command("dash", "-c", script)
	cmd.Env = append(os.Environ(), "PROCD_LOG="+r.log, "LAN_ADDR="+r.lan,
		"UCI_config="+r.path("etc/jnrelay/relayd.json"), "UCI_state_dir="+r.path("etc/jnrelay/state"))
	for _, kv := range uci {
		cmd.Env = append(cmd.Env, "UCI_"+kv)
	}
	b, err := cmd.CombinedOutput()
	p, _ := os.ReadFile(r.log)
	return string(p), string(b), err
}

// rootFile makes a root-owned file (0600, known content) a compromised
// relayd would like to own.
func (r *initRun) rootFile(p string) string {
	r.t.Helper()
	if err := os.WriteFile(r.path(p), []byte("root's\n"), 0o600); err != nil {
		r.t.Fatal(err)
	}
	return r.path(p)
}

// untouched checks that a root file planted as a link target is as made.
func (r *initRun) untouched(p string, mode os.FileMode, dir bool) {
	r.t.Helper()
	checkOwner(r.t, r.path(p), "0", "0", mode, dir)
	if !dir {
		if b, _ := os.ReadFile(r.path(p)); string(b) != "root's\n" {
			r.t.Errorf("/%s now holds %q", p, b)
		}
	}
}

// plant replaces p (in relayd's directory) with a link to target, as
// relayd (65534) would.
func (r *initRun) plant(p, target string) {
	r.t.Helper()
	os.RemoveAll(r.path(p))
	if err := os.Symlink(target, r.path(p)); err != nil {
		r.t.Fatal(err)
	}
	if err := os.Lchown(r.path(p), 65534, 65534); err != nil {
		r.t.Fatal(err)
	}
}

// TestOpenWrtInitFirstStart: a fresh device gets relayd's directories and
// configuration owned by relayd's user, an API on the LAN address, and a
// jail without capabilities.
func TestOpenWrtInitFirstStart(t *testing.T) {
	r := newInitRun(t)
	procd, out, err := r.start()
	if err != nil {
		t.Fatalf("start_service: %v\n%s", err, out)
	}
	checkOwner(t, r.path("etc/jnrelay"), "65534", "65534", 0o750, true)
	checkOwner(t, r.path("etc/jnrelay/relayd.json"), "65534", "65534", 0o640, false)
	checkOwner(t, r.path("run/jnrelay"), "65534", "65534", 0o750, true)
	if b, _ := os.ReadFile(r.path("etc/jnrelay/relayd.json")); string(b) != "{}\n" {
		t.Errorf("first configuration %q, want the default", b)
	}
	if _, err := os.Lstat(r.path("etc/jnrelay/state")); err == nil {
		t.Error("root created the state directory inside relayd's own (relayd creates it)")
	}
	if left, _ := filepath.Glob(r.path("etc/.jnrelay.*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
	for _, want := range []string{
		"append command -api-tcp 192.168.1.1:8787",
		"set user 65534", "set no_new_privs 1", "set capabilities /etc/capabilities/jnrelay.json",
		"jail relayd log",
		"mount_rw " + r.path("etc/jnrelay") + " " + r.path("run/jnrelay"),
		"set pidfile " + r.path("run/jnrelay.pid"),
	} {
		if !strings.Contains(procd, want+"\n") {
			t.Errorf("procd was not told %q:\n%s", want, procd)
		}
	}
	if strings.Contains(procd, "0.0.0.0") {
		t.Errorf("API on every interface:\n%s", procd)
	}
	// The offload broker: its own instance, root in relayd's group with
	// the fast path's two capabilities, its socket in a directory of
	// root's that relayd's jail sees read-only; opened before relayd.
	checkOwner(t, r.path("run/jnrelay-offload"), "0", "0", 0o755, true)
	socket := r.path("run/jnrelay-offload/offload.sock")
	broker, relayd, ok := strings.Cut(procd, "open relayd\n")
	if !ok || !strings.Contains(broker, "open offload\n") {
		t.Fatalf("no offload instance before relayd's:\n%s", procd)
	}
	for _, want := range []string{
		"set command false -offload-broker " + socket + " -offload-user 65534",
		"set group 65534", "set no_new_privs 1", "set capabilities /etc/capabilities/jnrelay-offload.json",
		"jail offload log procfs", "mount /etc/passwd", "mount_rw " + r.path("run/jnrelay-offload"),
	} {
		if !strings.Contains(broker, want+"\n") {
			t.Errorf("the offload instance was not told %q:\n%s", want, broker)
		}
	}
	if strings.Contains(broker, "set user") {
		t.Errorf("the offload broker runs as a user it could share files with:\n%s", broker)
	}
	for _, want := range []string{"append command -offload-socket " + socket, "mount " + r.path("run/jnrelay-offload")} {
		if !strings.Contains(relayd, want+"\n") {
			t.Errorf("relayd's instance was not told %q:\n%s", want, relayd)
		}
	}
	// Turned off: no broker, relayd relays in userspace.
	if procd, _, _ := r.start("offload_broker=0"); strings.Contains(procd, "offload") {
		t.Errorf("offload_broker 0 still runs the broker:\n%s", procd)
	}

	// No LAN address: no API on TCP rather than every interface.
	r.lan = ""
	procd, out, err = r.start()
	if err != nil || strings.Contains(procd, "-api-tcp") || !strings.Contains(out, "no IPv4 address") {
		t.Errorf("without a LAN address: %v %q\n%s", err, out, procd)
	}
	r.lan = "192.168.1.1"
	// The overrides: off, and an explicit address.
	if procd, _, _ := r.start("api_network="); strings.Contains(procd, "-api-tcp") {
		t.Errorf("api_network '' still serves TCP:\n%s", procd)
	}
	if procd, _, _ := r.start("api_tcp=0.0.0.0:9999"); !strings.Contains(procd, "append command -api-tcp 0.0.0.0:9999\n") {
		t.Errorf("api_tcp override ignored:\n%s", procd)
	}
}

// TestOpenWrtInitPlantedLinks: relayd, compromised, replaces what it owns
// with links to root's files; the next start, as root, must leave those
// files as they are.
func TestOpenWrtInitPlantedLinks(t *testing.T) {
	r := newInitRun(t)
	if _, out, err := r.start(); err != nil {
		t.Fatalf("first start: %v\n%s", err, out)
	}
	r.rootFile("elsewhere/shadow")
	if err := os.Mkdir(r.path("elsewhere/dir"), 0o755); err != nil {
		t.Fatal(err)
	}

	// The configuration and the state directory become links.
	r.plant("etc/jnrelay/relayd.json", r.path("elsewhere/shadow"))
	r.plant("etc/jnrelay/state", r.path("elsewhere/dir"))
	if _, out, err := r.start(); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	r.untouched("elsewhere/shadow", 0o600, false)
	r.untouched("elsewhere/dir", 0o755, true)

	// A dangling link where the configuration was: not created through it.
	r.plant("etc/jnrelay/relayd.json", r.path("elsewhere/created-by-root"))
	if _, out, err := r.start(); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	if _, err := os.Lstat(r.path("elsewhere/created-by-root")); err == nil {
		t.Error("root created a file through relayd's dangling link")
	}

	// A state directory inside relayd's own, through its link: left to
	// relayd.
	r.plant("etc/jnrelay/state", r.path("elsewhere/dir"))
	if _, out, err := r.start("state_dir=" + r.path("etc/jnrelay/state/sub")); err != nil {
		t.Fatalf("start: %v\n%s", err, out)
	}
	if _, err := os.Lstat(r.path("elsewhere/dir/sub")); err == nil {
		t.Error("root created a directory through relayd's link")
	}
	r.untouched("elsewhere/dir", 0o755, true)

	// A state directory elsewhere, below a directory of relayd's (a home
	// of its own) holding a link: root refuses to prepare it.
	if err := os.Mkdir(r.path("home"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(r.path("home"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	r.plant("home/state", r.path("elsewhere/dir"))
	for _, sd := range []string{"home/state", "home/state/sub"} {
		_, out, err := r.start("state_dir=" + r.path(sd))
		if err == nil || !strings.Contains(out, "not preparing") {
			t.Errorf("state_dir %s: %v %q, want a refusal", sd, err, out)
		}
	}
	if _, err := os.Lstat(r.path("elsewhere/dir/sub")); err == nil {
		t.Error("root created a directory through relayd's link")
	}
	r.untouched("elsewhere/dir", 0o755, true)

	// RUN_DIR swapped for a link (its parent is root's: only root could
	// do that, but the script still refuses to chown through it).
	r.plant("run/jnrelay", r.path("elsewhere/dir"))
	if _, out, err := r.start(); err == nil || !strings.Contains(out, "symbolic link") {
		t.Errorf("start with RUN_DIR a link: %v %q", err, out)
	}
	r.untouched("elsewhere/dir", 0o755, true)

	os.Remove(r.path("run/jnrelay"))
	if err := os.Mkdir(r.path("run/jnrelay"), 0o750); err != nil {
		t.Fatal(err)
	}
	// The broker's directory swapped for a link: no broker, no chown
	// through it, relayd still starts.
	r.plant("run/jnrelay-offload", r.path("elsewhere/dir"))
	procd, out, err := r.start()
	if err != nil || !strings.Contains(out, "no offload broker") || strings.Contains(procd, "offload") {
		t.Errorf("start with the broker's directory a link: %v %q\n%s", err, out, procd)
	}
	r.untouched("elsewhere/dir", 0o755, true)

	// A directory relayd can write in on the way (not root's alone).
	if err := os.Chown(r.path("etc"), 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, out, err := r.start(); err == nil || !strings.Contains(out, "not root's alone") {
		t.Errorf("start below a directory of relayd's: %v %q", err, out)
	}
	if err := os.Chown(r.path("etc"), 0, 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(r.path("etc"), 0o775); err != nil {
		t.Fatal(err)
	}
	if _, out, err := r.start(); err == nil || !strings.Contains(out, "not root's alone") {
		t.Errorf("start below a group-writable directory: %v %q", err, out)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(r.path("elsewhere/shadow"), &st); err != nil || st.Uid != 0 {
		t.Errorf("shadow owner %d %v", st.Uid, err)
	}
}
