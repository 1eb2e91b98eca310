package packages

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// TestDebInstallScratchRoot installs the amd64 .deb into an empty root with
// dpkg --root, running its maintainer scripts for real (chrootless, so they
// see DPKG_ROOT and work inside the root with systemd-sysusers --root,
// systemd-tmpfiles --root and systemctl --root), then upgrades, removes and
// purges it. A boot under systemd is tests/appliance's job.
func TestDebInstallScratchRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: dpkg --root sets file owners")
	}
	for _, tool := range []string{"dpkg", "systemd-sysusers", "systemd-tmpfiles", "systemctl"} {
		needTool(t, tool, "dpkg / systemd")
	}
	a := artifacts(t)
	deb := a.path(fmt.Sprintf("jnrelay_%s_amd64.deb", a.version))
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	dpkg := func(args ...string) {
		t.Helper()
		// systemd itself is not installed in the scratch root.
		args = append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends"}, args...)
		out, err := exec.Command("dpkg", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	in := func(p string) string { return filepath.Join(root, p) }
	wants := []string{
		"etc/systemd/system/multi-user.target.wants/relayd.service",
		"etc/systemd/system/sockets.target.wants/relayd-provision.socket",
		"etc/systemd/system/sockets.target.wants/relayd-offload.socket",
	}

	dpkg("-i", deb)

	// sysusers.d: the service user and the admin group.
	pw := readColonFile(t, in("etc/passwd"))
	gr := readColonFile(t, in("etc/group"))
	user, ok := pw["jnrelay"]
	if !ok {
		t.Fatalf("user jnrelay not created; /etc/passwd: %v", pw)
	}
	if user[5] != "/var/lib/jnrelay" || !strings.HasSuffix(user[6], "nologin") {
		t.Errorf("user jnrelay: home %s shell %s, want /var/lib/jnrelay and nologin", user[5], user[6])
	}
	if _, ok := gr["jnrelay-admin"]; !ok {
		t.Errorf("group jnrelay-admin not created; /etc/group: %v", gr)
	}
	uid, gid := user[2], user[3]

	// tmpfiles.d: directories owned by jnrelay, the default configuration
	// copied (relayd rewrites it, so it is jnrelay's too).
	checkOwner(t, in("etc/jnrelay"), uid, gid, 0o750, true)
	checkOwner(t, in("run/jnrelay"), "0", "0", 0o755, true)
	checkOwner(t, in("etc/jnrelay/relayd.json"), uid, gid, 0o640, false)
	def, err := os.ReadFile(in("usr/share/jnrelay/relayd.default.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(in("etc/jnrelay/relayd.json")); string(got) != string(def) {
		t.Errorf("/etc/jnrelay/relayd.json = %q, want the default %q", got, def)
	}
	// Enabled on first install.
	for _, w := range wants {
		target, err := os.Readlink(in(w))
		if err != nil || filepath.Base(target) != filepath.Base(w) {
			t.Errorf("%s: %q %v, want a link to the unit (enabled)", w, target, err)
		}
	}
	out, err := exec.Command(in("usr/bin/relayd"), "-version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), binVersion) {
		t.Errorf("installed relayd -version: %v %q, want %s", err, out, binVersion)
	}

	// relayd owns its configuration from now on, and an administrator may
	// disable the relay: an upgrade keeps both.
	custom := []byte(`{"public_address":"203.0.113.10"}` + "\n")
	if err := os.WriteFile(in("etc/jnrelay/relayd.json"), custom, 0o640); err != nil {
		t.Fatal(err)
	}
	for _, w := range wants {
		if err := os.Remove(in(w)); err != nil {
			t.Fatal(err)
		}
	}
	dpkg("-i", deb)
	if got, _ := os.ReadFile(in("etc/jnrelay/relayd.json")); string(got) != string(custom) {
		t.Errorf("upgrade changed /etc/jnrelay/relayd.json to %q", got)
	}
	for _, w := range wants {
		if _, err := os.Lstat(in(w)); err == nil {
			t.Errorf("upgrade re-enabled %s after the administrator disabled it", w)
		}
	}

	// Modes set back on upgrade whatever they were (an older version, an
	// editor), and never through a link relayd planted: a compromised
	// relayd owns /etc/jnrelay and /var/lib/jnrelay, root runs postinst.
	upgradeModes(t, root, uid, gid, func() { dpkg("-i", deb) })

	// remove keeps configuration and state, purge deletes them (users stay).
	dpkg("-r", "jnrelay")
	if _, err := os.Stat(in("usr/bin/relayd")); err == nil {
		t.Error("remove left /usr/bin/relayd")
	}
	if got, _ := os.ReadFile(in("etc/jnrelay/relayd.json")); string(got) != string(custom) {
		t.Errorf("remove changed or deleted /etc/jnrelay/relayd.json (%q)", got)
	}
	if err := os.Symlink("/usr/lib/systemd/system/relayd.service", in(wants[0])); err != nil {
		t.Fatal(err)
	}
	dpkg("-P", "jnrelay")
	for _, p := range append([]string{"etc/jnrelay", "run/jnrelay"}, wants...) {
		if _, err := os.Lstat(in(p)); err == nil {
			t.Errorf("purge left /%s", p)
		}
	}
	if _, ok := readColonFile(t, in("etc/passwd"))["jnrelay"]; !ok {
		t.Error("purge deleted the user jnrelay (it stays: files elsewhere may carry its id)")
	}
}

// readColonFile reads /etc/passwd or /etc/group into name → fields.
func readColonFile(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Split(sc.Text(), ":")
		m[fields[0]] = fields
	}
	return m
}

func checkOwner(t *testing.T, path, uid, gid string, mode os.FileMode, dir bool) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%v", err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	if fmt.Sprint(st.Uid) != uid || fmt.Sprint(st.Gid) != gid || fi.Mode().Perm() != mode || fi.IsDir() != dir {
		t.Errorf("%s: %d:%d %v, want %s:%s %v (dir %v)", path, st.Uid, st.Gid, fi.Mode(), uid, gid, mode, dir)
	}
}

// upgradeModes loosens the modes of the configuration and state files,
// plants symlinks from relayd's directories to root-owned files in their
// place, runs upgrade (postinst as root) and checks that the files are
// 0640/0600 jnrelay's again and the link targets untouched.
func upgradeModes(t *testing.T, root, uid, gid string, upgrade func()) {
	t.Helper()
	in := func(p string) string { return filepath.Join(root, p) }
	u, _ := strconv.Atoi(uid)
	g, _ := strconv.Atoi(gid)
	state := in("var/lib/jnrelay")
	if err := os.MkdirAll(state, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, u, g); err != nil {
		t.Fatal(err)
	}
	// Loose modes on real files.
	for _, f := range []string{"etc/jnrelay/relayd.json", "var/lib/jnrelay/api-token"} {
		if err := os.Chmod(in(f), 0o644); err != nil {
			if err := os.WriteFile(in(f), []byte("0123456789abcdef0123\n"), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(in(f), u, g); err != nil {
			t.Fatal(err)
		}
	}
	// Links relayd could plant, to root's files (inside the scratch root:
	// systemd-tmpfiles --root resolves them there).
	targets := map[string]string{
		"etc/jnrelay/relayd.json.last-good": "etc/secret-a",
		"var/lib/jnrelay/api-claimed":       "etc/secret-b",
		"var/lib/jnrelay/usage.json":        "etc/secret-c",
	}
	for link, target := range targets {
		if err := os.WriteFile(in(target), []byte("root's\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/"+target, in(link)); err != nil {
			t.Fatal(err)
		}
		if err := os.Lchown(in(link), u, g); err != nil {
			t.Fatal(err)
		}
	}
	upgrade()
	checkOwner(t, in("etc/jnrelay/relayd.json"), uid, gid, 0o640, false)
	checkOwner(t, in("var/lib/jnrelay/api-token"), uid, gid, 0o600, false)
	for link, target := range targets {
		checkOwner(t, in(target), "0", "0", 0o600, false)
		if b, _ := os.ReadFile(in(target)); string(b) != "root's\n" {
			t.Errorf("/%s (planted as /%s) now holds %q", target, link, b)
		}
		if err := os.Remove(in(link)); err != nil {
			t.Fatal(err)
		}
	}

	// A dangling link where the configuration is: tmpfiles' C line
	// (copy the default when missing) must not create its target.
	cfg := in("etc/jnrelay/relayd.json")
	saved, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/created-by-root", cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(cfg, u, g); err != nil {
		t.Fatal(err)
	}
	upgrade()
	if _, err := os.Lstat(in("etc/created-by-root")); err == nil {
		t.Error("postinst created /etc/created-by-root through relayd's dangling link")
	}
	if err := os.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfg, saved, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(cfg, u, g); err != nil {
		t.Fatal(err)
	}
}
