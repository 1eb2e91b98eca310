// Package packages checks what jnrelay installs: the systemd units and their
// hardening score (systemd-analyze), the sysusers.d/tmpfiles.d entries, and
// the artifacts of image/package.sh (rootfs overlays, .deb, OpenWrt .ipk) —
// their metadata, file modes and owners, the ELF machine of each binary,
// reproducibility, and a real dpkg install into a scratch root.
package packages

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is the highest `systemd-analyze security` exposure relayd.service
// and relayd-offload.service may have (issue 6: ≤ 1.5 on systemd's 0–10
// scale).
const maxExposure = 1.5

// repoRoot is the directory holding go.mod.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test directory")
		}
		dir = parent
	}
}

func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s not found: install the Debian package %s (tests/deps.sh)", name, pkg)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for ([a-z-]+)\.service: ([0-9]+\.[0-9]+)`)

// TestServiceSecurityExposure scores relayd, which holds no capability,
// and its offload broker, which holds CAP_BPF and CAP_NET_ADMIN for it.
func TestServiceSecurityExposure(t *testing.T) {
	needTool(t, "systemd-analyze", "systemd")
	for _, name := range []string{"relayd", "relayd-offload"} {
		unit := filepath.Join(repoRoot(t), "systemd", name+".service")
		out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", unit).CombinedOutput()
		// systemd-analyze security exits non-zero only when a --threshold is
		// exceeded; any other failure shows up as a missing score line.
		m := exposureRE.FindSubmatch(out)
		if m == nil || string(m[1]) != name {
			t.Fatalf("no exposure score for %s in systemd-analyze security output (err %v):\n%s", name, err, out)
		}
		score, perr := strconv.ParseFloat(string(m[2]), 64)
		if perr != nil {
			t.Fatal(perr)
		}
		t.Logf("%s.service exposure %.1f (limit %.1f)", name, score, maxExposure)
		if score > maxExposure {
			t.Fatalf("%s.service exposure %.1f is above %.1f:\n%s", name, score, maxExposure, out)
		}
	}
}

// TestUnitsVerify runs systemd-analyze verify on both units. It checks that
// ExecStart= names an executable file, so the test verifies copies whose
// /usr/bin/relayd is replaced by a freshly built relayd; it also runs that
// relayd with -h to make sure it knows every flag the unit passes.
func TestUnitsVerify(t *testing.T) {
	needTool(t, "systemd-analyze", "systemd")
	root := repoRoot(t)
	a := artifacts(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "relayd")
	copyFile(t, a.hostBinary(t), bin, 0o755)
	units := []string{"relayd.service", "relayd-provision.socket", "relayd-offload.service", "relayd-offload.socket"}
	for _, name := range units {
		b, err := os.ReadFile(filepath.Join(root, "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		s := strings.ReplaceAll(string(b), "ExecStart=/usr/bin/relayd ", "ExecStart="+bin+" ")
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	args := []string{"verify", "--no-pager"}
	for _, name := range units {
		args = append(args, filepath.Join(dir, name))
	}
	cmd := exec.Command("systemd-analyze", args...)
	out, err := cmd.CombinedOutput()
	// verify prints warnings (unknown keys, unparsable values) but still
	// exits 0: any output is a finding.
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}

	// Every flag of ExecStart must be one relayd defines, or relayd exits
	// with status 2 at every start.
	help, _ := exec.Command(bin, "-h").CombinedOutput() // -h exits 0 or 2 depending on flag package; the text is what counts
	for _, name := range []string{"relayd.service", "relayd-offload.service"} {
		svc := parseUnit(t, filepath.Join(root, "systemd", name))
		for _, f := range strings.Fields(svc.get(t, "Service", "ExecStart"))[1:] {
			if !strings.HasPrefix(f, "-") {
				continue
			}
			if !regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(f) + `\b`).Match(help) {
				t.Errorf("%s passes %s, which relayd -h does not list:\n%s", name, f, help)
			}
		}
	}
}

// unit is a parsed systemd unit file: section → key → values in order.
type unit map[string]map[string][]string

func parseUnit(t *testing.T, path string) unit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := unit{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: cannot parse line %q", path, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return u
}

// get returns the last value of a key, as systemd does for single-valued
// settings.
func (u unit) get(t *testing.T, section, key string) string {
	t.Helper()
	vs := u[section][key]
	if len(vs) == 0 {
		t.Errorf("[%s] %s= missing", section, key)
		return ""
	}
	return vs[len(vs)-1]
}

// TestUnitContract pins the settings the daemon side relies on (readiness,
// watchdog, drain time, socket ownership, writable paths): changing one
// needs a matching change in relayd.
func TestUnitContract(t *testing.T) {
	root := repoRoot(t)
	svc := parseUnit(t, filepath.Join(root, "systemd", "relayd.service"))
	sock := parseUnit(t, filepath.Join(root, "systemd", "relayd-provision.socket"))
	broker := parseUnit(t, filepath.Join(root, "systemd", "relayd-offload.service"))
	brokerSock := parseUnit(t, filepath.Join(root, "systemd", "relayd-offload.socket"))
	want := []struct {
		u            unit
		section, key string
		value        string
	}{
		{svc, "Service", "ExecStart", "/usr/bin/relayd -config /etc/jnrelay/relayd.json -state-dir /var/lib/jnrelay -api-socket /run/jnrelay/api.sock -api-admin-group jnrelay-admin -offload-socket /run/jnrelay/offload.sock"},
		{svc, "Service", "Type", "notify"},
		{svc, "Service", "NotifyAccess", "main"},
		{svc, "Service", "ExecReload", "/bin/kill -HUP $MAINPID"},
		{svc, "Service", "WatchdogSec", "30s"},
		{svc, "Service", "TimeoutStopSec", "45s"},
		{svc, "Service", "Restart", "on-failure"},
		{svc, "Service", "RestartSec", "2s"},
		{svc, "Service", "User", "jnrelay"},
		{svc, "Service", "Group", "jnrelay"},
		{svc, "Service", "Sockets", "relayd-provision.socket"},
		{svc, "Service", "ReadWritePaths", "/etc/jnrelay"},
		{svc, "Service", "StateDirectory", "jnrelay"},
		{svc, "Service", "ProtectSystem", "strict"},
		{svc, "Service", "CapabilityBoundingSet", ""},
		{svc, "Service", "UMask", "0027"},
		{svc, "Service", "MemoryMax", "64M"},
		{svc, "Service", "Environment", "GOMEMLIMIT=48MiB"},
		{svc, "Service", "LimitNOFILE", "65536"},
		{svc, "Service", "RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX AF_NETLINK"},
		{svc, "Unit", "Requires", "relayd-provision.socket"},
		{sock, "Socket", "ListenStream", "/run/jnrelay/api.sock"},
		{sock, "Socket", "SocketMode", "0660"},
		{sock, "Socket", "SocketUser", "root"},
		{sock, "Socket", "SocketGroup", "jnrelay-admin"},
		{sock, "Socket", "Service", "relayd.service"},
		{sock, "Install", "WantedBy", "sockets.target"},
		// The offload broker: relayd's capabilities, held apart.
		{broker, "Service", "ExecStart", "/usr/bin/relayd -offload-broker /run/jnrelay/offload.sock -offload-user jnrelay"},
		{broker, "Service", "Sockets", "relayd-offload.socket"},
		{broker, "Service", "CapabilityBoundingSet", "CAP_BPF CAP_NET_ADMIN"},
		{broker, "Service", "AmbientCapabilities", "CAP_BPF CAP_NET_ADMIN"},
		{broker, "Service", "RestrictAddressFamilies", "AF_UNIX AF_NETLINK"},
		{broker, "Service", "NoNewPrivileges", "yes"},
		{broker, "Service", "ProtectSystem", "strict"},
		{brokerSock, "Socket", "ListenStream", "/run/jnrelay/offload.sock"},
		{brokerSock, "Socket", "SocketMode", "0660"},
		{brokerSock, "Socket", "SocketUser", "root"},
		{brokerSock, "Socket", "SocketGroup", "jnrelay"},
		{brokerSock, "Socket", "Service", "relayd-offload.service"},
		{svc, "Service", "AmbientCapabilities", ""},
	}
	for _, w := range want {
		if got := w.u.get(t, w.section, w.key); got != w.value {
			t.Errorf("[%s] %s=%s, want %s", w.section, w.key, got, w.value)
		}
	}
	// /run/jnrelay is root's (tmpfiles.d): RuntimeDirectory= would give it
	// to jnrelay, which could then swap the socket root talks to.
	for _, k := range []string{"RuntimeDirectory", "RuntimeDirectoryMode", "RuntimeDirectoryPreserve"} {
		if v, ok := svc["Service"][k]; ok {
			t.Errorf("[Service] %s=%v: /run/jnrelay must stay root's", k, v)
		}
	}
	after := strings.Join(svc["Unit"]["After"], " ")
	for _, sock := range []string{"relayd-provision.socket", "relayd-offload.socket"} {
		if !strings.Contains(after, sock) {
			t.Errorf("relayd.service is not ordered after %s (After=%s)", sock, after)
		}
	}
	if wants := strings.Join(svc["Unit"]["Wants"], " "); !strings.Contains(wants, "relayd-offload.socket") {
		t.Errorf("relayd.service does not want relayd-offload.socket (Wants=%s): upgrades would not start the broker", wants)
	}
	// bpf(2) is allowed to the broker only: the last SystemCallFilter=
	// of its unit adds it back after @privileged went.
	if f := broker["Service"]["SystemCallFilter"]; len(f) == 0 || f[len(f)-1] != "bpf" {
		t.Errorf("relayd-offload.service SystemCallFilter=%v: want bpf allowed last", f)
	}
	for _, f := range svc["Service"]["SystemCallFilter"] {
		if strings.Contains(f, "bpf") {
			t.Errorf("relayd.service allows %s: bpf(2) is the broker's", f)
		}
	}
}
