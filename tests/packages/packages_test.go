package packages

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
)

// target is one cross build of relayd and what image/package.sh makes of it.
type target struct {
	name          string // image/cross.sh's suffix: relayd-linux-<name>
	goarch, goarm string
	deb, ipk      string // package architectures; "" = none
	machine       elf.Machine
	class         elf.Class
	order         elf.Data
}

var targets = []target{
	{"armv6", "arm", "6", "armhf", "", elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"armv7", "arm", "7", "", "arm_cortex-a7_neon-vfpv4", elf.EM_ARM, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"arm64", "arm64", "", "arm64", "aarch64_cortex-a53", elf.EM_AARCH64, elf.ELFCLASS64, elf.ELFDATA2LSB},
	{"mipsle", "mipsle", "", "", "mipsel_24kc", elf.EM_MIPS, elf.ELFCLASS32, elf.ELFDATA2LSB},
	{"mips", "mips", "", "", "mips_24kc", elf.EM_MIPS, elf.ELFCLASS32, elf.ELFDATA2MSB},
	{"amd64", "amd64", "", "amd64", "x86_64", elf.EM_X86_64, elf.ELFCLASS64, elf.ELFDATA2LSB},
}

// binVersion is stamped into the test's binaries, to recognise them inside
// the packages.
const binVersion = "packages-test"

// built is the output of one image/package.sh run over freshly built
// binaries, shared by the tests of this package.
type built struct {
	bins, dist string
	version    string // package version image/package.sh chose
	epoch      int64  // SOURCE_DATE_EPOCH it used
	err        error
}

var (
	buildOnce sync.Once
	build     built
	scratch   string // removed by TestMain
)

func TestMain(m *testing.M) {
	code := m.Run()
	if scratch != "" {
		os.RemoveAll(scratch)
	}
	os.Exit(code)
}

// artifacts cross-builds relayd for every target and runs image/package.sh
// on the binaries, once per test run.
func artifacts(t *testing.T) *built {
	t.Helper()
	root := repoRoot(t)
	buildOnce.Do(func() { build = makeArtifacts(root) })
	if build.err != nil {
		t.Fatal(build.err)
	}
	return &build
}

func makeArtifacts(root string) built {
	var b built
	var err error
	if scratch, err = os.MkdirTemp("", "jnrelay-packages-"); err != nil {
		return built{err: err}
	}
	b.bins, b.dist = filepath.Join(scratch, "bin"), filepath.Join(scratch, "dist")
	if err := crossBuild(root, b.bins); err != nil {
		return built{err: err}
	}
	start := time.Now()
	out, err := packageSh(root, b.bins, b.dist)
	if err != nil {
		return built{err: fmt.Errorf("image/package.sh: %v\n%s", err, out)}
	}
	m := regexp.MustCompile(`package version (\S+), SOURCE_DATE_EPOCH (\d+)`).FindStringSubmatch(out)
	if m == nil {
		return built{err: fmt.Errorf("image/package.sh did not report its version:\n%s", out)}
	}
	b.version = m[1]
	b.epoch, _ = strconv.ParseInt(m[2], 10, 64)
	fmt.Fprintf(os.Stderr, "packages: image/package.sh built version %s in %v\n", b.version, time.Since(start).Round(time.Millisecond))
	return b
}

// crossBuild builds relayd for every target in parallel, as image/cross.sh
// does, into dir.
func crossBuild(root, dir string) error {
	start := time.Now()
	errs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, tg := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version="+binVersion,
				"-o", filepath.Join(dir, "relayd-linux-"+tg.name), "./relayd")
			cmd.Dir = root
			cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+tg.goarch, "CGO_ENABLED=0", "GOMIPS=softfloat")
			if tg.goarm != "" {
				cmd.Env = append(cmd.Env, "GOARM="+tg.goarm)
			}
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("build relayd for %s: %v\n%s", tg.name, err, out)
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(os.Stderr, "packages: cross builds in %v\n", time.Since(start).Round(time.Millisecond))
	return nil
}

func packageSh(root, bins, dist string, arches ...string) (string, error) {
	cmd := exec.Command("bash", append([]string{"image/package.sh", "-b", bins, "-o", dist}, arches...)...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// hostBinary is the built relayd this machine runs.
func (b *built) hostBinary(t *testing.T) string {
	t.Helper()
	for _, tg := range targets {
		if tg.goarch == runtime.GOARCH && (tg.goarm == "" || tg.goarm == "7") {
			return filepath.Join(b.bins, "relayd-linux-"+tg.name)
		}
	}
	t.Skipf("no relayd target for this machine's GOARCH %s", runtime.GOARCH)
	return ""
}

func (b *built) path(name string) string { return filepath.Join(b.dist, name) }

// entry is one member of a tar archive.
type entry struct {
	hdr  *tar.Header
	data []byte
}

// readTar reads a tar stream (gzip'd when gz) into its members, in order.
func readTar(t *testing.T, r io.Reader, gz bool) []entry {
	t.Helper()
	if gz {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		// gzip -n: no name and no timestamp in the gzip header, or the
		// archive would differ with every build.
		if zr.Name != "" || !zr.ModTime.IsZero() {
			t.Errorf("gzip header carries name %q / time %v (want gzip -n)", zr.Name, zr.ModTime)
		}
		r = zr
	}
	tr := tar.NewReader(r)
	var es []entry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, entry{h, data})
	}
}

func readTarFile(t *testing.T, path string) []entry {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return readTar(t, f, true)
}

func index(es []entry) map[string]entry {
	m := map[string]entry{}
	for _, e := range es {
		m[strings.TrimPrefix(strings.TrimSuffix(e.hdr.Name, "/"), "./")] = e
	}
	return m
}

// checkFiles checks that each wanted file is present as a regular file with
// the mode, and every member is owned by root with the commit's mtime.
func checkFiles(t *testing.T, what string, es []entry, want map[string]int64, epoch int64) {
	t.Helper()
	idx := index(es)
	for name, mode := range want {
		e, ok := idx[name]
		switch {
		case !ok:
			t.Errorf("%s: %s missing", what, name)
		case e.hdr.Typeflag != tar.TypeReg:
			t.Errorf("%s: %s is not a regular file (type %c)", what, name, e.hdr.Typeflag)
		case e.hdr.Mode&0o7777 != mode:
			t.Errorf("%s: %s mode %04o, want %04o", what, name, e.hdr.Mode&0o7777, mode)
		}
	}
	// GNU tar --sort=name orders the entries of each directory by name
	// (a directory's content follows it, before its next sibling).
	lastChild := map[string]string{}
	for _, e := range es {
		name := strings.TrimSuffix(e.hdr.Name, "/")
		dir, base := filepath.Dir(name), filepath.Base(name)
		if prev, ok := lastChild[dir]; ok && prev >= base {
			t.Errorf("%s: %s comes after %s in %s: not sorted by name", what, base, prev, dir)
		}
		lastChild[dir] = base
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 {
			t.Errorf("%s: %s owned by %d:%d, want 0:0", what, e.hdr.Name, e.hdr.Uid, e.hdr.Gid)
		}
		if epoch != 0 && e.hdr.ModTime.Unix() != epoch {
			t.Errorf("%s: %s mtime %d, want SOURCE_DATE_EPOCH %d", what, e.hdr.Name, e.hdr.ModTime.Unix(), epoch)
		}
		if e.hdr.Typeflag == tar.TypeDir && e.hdr.Mode&0o7777 != 0o755 {
			t.Errorf("%s: directory %s mode %04o, want 0755", what, e.hdr.Name, e.hdr.Mode&0o7777)
		}
	}
}

// checkELF checks that data is a static relayd for the target.
func checkELF(t *testing.T, what string, data []byte, tg target) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		t.Errorf("%s: not an ELF file: %v", what, err)
		return
	}
	if f.Machine != tg.machine || f.Class != tg.class || f.Data != tg.order {
		t.Errorf("%s: ELF %v %v %v, want %v %v %v for %s", what, f.Machine, f.Class, f.Data, tg.machine, tg.class, tg.order, tg.name)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s: dynamically linked (PT_INTERP), want a static binary", what)
		}
	}
	if !bytes.Contains(data, []byte(binVersion)) {
		t.Errorf("%s: not the binary built by this test (version %q not found)", what, binVersion)
	}
}

// systemdFiles is what the overlay and the .deb install, with modes.
var systemdFiles = map[string]int64{
	"usr/bin/relayd":                                  0o755,
	"usr/lib/systemd/system/relayd.service":           0o644,
	"usr/lib/systemd/system/relayd-provision.socket":  0o644,
	"usr/lib/systemd/system/relayd-offload.service":   0o644,
	"usr/lib/systemd/system/relayd-offload.socket":    0o644,
	"usr/lib/systemd/system-preset/80-jnrelay.preset": 0o644,
	"usr/lib/sysusers.d/jnrelay.conf":                 0o644,
	"usr/lib/tmpfiles.d/jnrelay.conf":                 0o644,
	"usr/share/jnrelay/relayd.default.json":           0o644,
	"usr/share/jnrelay/relayd-kernel-offload.conf":    0o644,
	"usr/share/doc/jnrelay/install.md":                0o644,
	"usr/share/doc/jnrelay/configuration.md":          0o644,
	"usr/share/doc/jnrelay/README.md":                 0o644,
}

func TestOverlayTarballs(t *testing.T) {
	a := artifacts(t)
	root := repoRoot(t)
	for _, tg := range targets {
		name := "jnrelay-overlay-" + tg.name + ".tar.gz"
		es := readTarFile(t, a.path(name))
		checkFiles(t, name, es, systemdFiles, a.epoch)
		idx := index(es)
		for _, e := range es {
			if !strings.HasPrefix(e.hdr.Name, "usr/") {
				t.Errorf("%s: %s outside usr/ (the overlay must not replace files of /etc or the root)", name, e.hdr.Name)
			}
		}
		checkELF(t, name+": usr/bin/relayd", idx["usr/bin/relayd"].data, tg)
		for file, src := range map[string]string{
			"usr/lib/systemd/system/relayd.service":         "systemd/relayd.service",
			"usr/lib/systemd/system/relayd-offload.service": "systemd/relayd-offload.service",
			"usr/lib/tmpfiles.d/jnrelay.conf":               "systemd/tmpfiles.d/jnrelay.conf",
			"usr/share/jnrelay/relayd.default.json":         "image/relayd.default.json",
			"usr/share/jnrelay/relayd-kernel-offload.conf":  "systemd/relayd-kernel-offload.conf",
		} {
			want, err := os.ReadFile(filepath.Join(root, src))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(idx[file].data, want) {
				t.Errorf("%s: %s differs from %s", name, file, src)
			}
		}
	}
}

// controlFields parses Debian/opkg control paragraphs ("Key: value" and
// continuation lines).
func controlFields(t *testing.T, text string) map[string]string {
	t.Helper()
	f := map[string]string{}
	last := ""
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if strings.HasPrefix(line, " ") && last != "" {
			f[last] += "\n" + line
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("control: cannot parse %q", line)
		}
		last = k
		f[k] = strings.TrimSpace(v)
	}
	return f
}

var versionRE = regexp.MustCompile(`^([0-9]+\.[0-9]+\.[0-9]+(\+git[0-9]+\.[0-9a-f]+)?|0\.0~git[0-9]{8}\.[0-9a-f]{7,})(\+dirty)?$`)

func TestPackageVersion(t *testing.T) {
	a := artifacts(t)
	if !versionRE.MatchString(a.version) {
		t.Errorf("package version %q is not of the documented forms (X.Y.Z[+gitN.HASH] or 0.0~gitDATE.HASH, +dirty)", a.version)
	}
	if out, err := exec.Command("dpkg", "--validate-version", a.version).CombinedOutput(); err != nil {
		t.Errorf("dpkg rejects version %q: %v %s", a.version, err, out)
	}
	commit, err := exec.Command("git", "-C", repoRoot(t), "log", "-1", "--format=%ct").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimSpace(string(commit)); strconv.FormatInt(a.epoch, 10) != want {
		t.Errorf("SOURCE_DATE_EPOCH %d, want the last commit's time %s", a.epoch, want)
	}
}

func TestDebianPackages(t *testing.T) {
	needTool(t, "dpkg-deb", "dpkg")
	a := artifacts(t)
	for _, tg := range targets {
		if tg.deb == "" {
			continue
		}
		name := fmt.Sprintf("jnrelay_%s_%s.deb", a.version, tg.deb)
		deb := a.path(name)
		out, err := exec.Command("dpkg-deb", "--field", deb).Output()
		if err != nil {
			t.Fatalf("dpkg-deb --field %s: %v", name, err)
		}
		f := controlFields(t, string(out))
		for k, v := range map[string]string{
			"Package": "jnrelay", "Version": a.version, "Architecture": tg.deb,
			"Depends": "systemd (>= 247)", "Section": "net", "Priority": "optional",
		} {
			if f[k] != v {
				t.Errorf("%s: %s: %q, want %q", name, k, f[k], v)
			}
		}
		if n, err := strconv.Atoi(f["Installed-Size"]); err != nil || n < 1024 {
			t.Errorf("%s: Installed-Size %q is not a plausible size in KiB", name, f["Installed-Size"])
		}
		if f["Maintainer"] == "" || !strings.HasPrefix(f["Description"], "Jingle Nodes") {
			t.Errorf("%s: Maintainer %q / Description %q", name, f["Maintainer"], f["Description"])
		}

		// Control archive: the three maintainer scripts, executable; no
		// conffiles (relayd rewrites its configuration; dpkg must not own it).
		ctrl := readDebTar(t, deb, "--ctrl-tarfile")
		cidx := index(ctrl)
		for _, s := range []string{"postinst", "prerm", "postrm"} {
			e, ok := cidx[s]
			if !ok || e.hdr.Mode&0o777 != 0o755 {
				t.Errorf("%s: maintainer script %s missing or not 0755", name, s)
			}
		}
		if _, ok := cidx["conffiles"]; ok {
			t.Errorf("%s: has conffiles; /etc/jnrelay/relayd.json is rewritten by relayd and must not be one", name)
		}

		data := readDebTar(t, deb, "--fsys-tarfile")
		checkFiles(t, name, data, systemdFiles, a.epoch)
		for _, e := range data {
			if n := strings.TrimPrefix(e.hdr.Name, "./"); strings.HasPrefix(n, "etc/") {
				t.Errorf("%s: ships %s under /etc (the configuration is created at install, not shipped)", name, n)
			}
		}
		checkELF(t, name+": usr/bin/relayd", index(data)["usr/bin/relayd"].data, tg)
	}
}

func readDebTar(t *testing.T, deb, flag string) []entry {
	t.Helper()
	out, err := exec.Command("dpkg-deb", flag, deb).Output()
	if err != nil {
		t.Fatalf("dpkg-deb %s %s: %v", flag, deb, err)
	}
	return readTar(t, bytes.NewReader(out), false)
}

func TestOpenWrtPackages(t *testing.T) {
	a := artifacts(t)
	for _, tg := range targets {
		if tg.ipk == "" {
			continue
		}
		name := fmt.Sprintf("jnrelay_%s_%s.ipk", a.version, tg.ipk)
		outer := readTarFile(t, a.path(name))
		// The layout of OpenWrt's ipkg-build: a gzip'd tar (not ar) of
		// exactly these members, in this order.
		var members []string
		for _, e := range outer {
			members = append(members, e.hdr.Name)
		}
		if want := []string{"./debian-binary", "./data.tar.gz", "./control.tar.gz"}; strings.Join(members, " ") != strings.Join(want, " ") {
			t.Errorf("%s: members %v, want %v", name, members, want)
			continue
		}
		if got := string(outer[0].data); got != "2.0\n" {
			t.Errorf("%s: debian-binary %q, want \"2.0\\n\"", name, got)
		}
		data := readTar(t, bytes.NewReader(outer[1].data), true)
		ctrl := readTar(t, bytes.NewReader(outer[2].data), true)
		checkFiles(t, name+" data", data, map[string]int64{
			"usr/bin/relayd":                        0o755,
			"etc/init.d/jnrelay":                    0o755,
			"etc/config/jnrelay":                    0o644,
			"lib/upgrade/keep.d/jnrelay":            0o644,
			"etc/capabilities/jnrelay.json":         0o644,
			"etc/capabilities/jnrelay-offload.json": 0o644,
			"usr/share/jnrelay/relayd.default.json": 0o644,
			fw4Forward:                              0o644,
		}, a.epoch)
		checkFiles(t, name+" control", ctrl, map[string]int64{
			"control": 0o644, "conffiles": 0o644, "postinst": 0o755, "prerm": 0o755,
		}, a.epoch)
		didx, cidx := index(data), index(ctrl)
		checkFw4Forward(t, name, didx[fw4Forward].data)
		checkELF(t, name+": usr/bin/relayd", didx["usr/bin/relayd"].data, tg)
		// On the router itself fw4 opens the ports: port mapping is off.
		if want, err := os.ReadFile(filepath.Join(repoRoot(t), "image", "openwrt", "relayd.default.json")); err != nil || !bytes.Equal(didx["usr/share/jnrelay/relayd.default.json"].data, want) {
			t.Errorf("%s: usr/share/jnrelay/relayd.default.json is not image/openwrt/relayd.default.json (%v)", name, err)
		}
		// procd's capabilities file: every set empty.
		var caps map[string][]string
		if err := json.Unmarshal(didx["etc/capabilities/jnrelay.json"].data, &caps); err != nil {
			t.Errorf("%s: etc/capabilities/jnrelay.json: %v", name, err)
		}
		for _, set := range []string{"bounding", "effective", "permitted", "inheritable", "ambient"} {
			if c, ok := caps[set]; !ok || len(c) != 0 {
				t.Errorf("%s: capabilities %s = %v (present %v), want empty", name, set, c, ok)
			}
		}
		// The offload broker's: the fast path's two, nothing to pass on.
		var brokerCaps map[string][]string
		if err := json.Unmarshal(didx["etc/capabilities/jnrelay-offload.json"].data, &brokerCaps); err != nil {
			t.Errorf("%s: etc/capabilities/jnrelay-offload.json: %v", name, err)
		}
		for set, want := range map[string]string{"bounding": "CAP_BPF CAP_NET_ADMIN", "effective": "CAP_BPF CAP_NET_ADMIN",
			"permitted": "CAP_BPF CAP_NET_ADMIN", "inheritable": "", "ambient": ""} {
			if c, ok := brokerCaps[set]; !ok || strings.Join(c, " ") != want {
				t.Errorf("%s: offload broker capabilities %s = %v (present %v), want %q", name, set, c, ok, want)
			}
		}

		f := controlFields(t, string(cidx["control"].data))
		for k, v := range map[string]string{
			"Package": "jnrelay", "Version": a.version, "Architecture": tg.ipk,
			"Depends": "procd", "Require-User": "jnrelay:jnrelay",
		} {
			if f[k] != v {
				t.Errorf("%s: %s: %q, want %q", name, k, f[k], v)
			}
		}
		// As ipkg-build: the size of the uncompressed data tar, in bytes.
		zr, err := gzip.NewReader(bytes.NewReader(outer[1].data))
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, zr)
		if err != nil {
			t.Fatal(err)
		}
		if f["Installed-Size"] != strconv.FormatInt(n, 10) {
			t.Errorf("%s: Installed-Size %q, want %d (uncompressed data.tar)", name, f["Installed-Size"], n)
		}
		if got := string(cidx["conffiles"].data); got != "/etc/config/jnrelay\n" {
			t.Errorf("%s: conffiles %q, want only /etc/config/jnrelay", name, got)
		}
		init := string(didx["etc/init.d/jnrelay"].data)
		for _, want := range []string{"#!/bin/sh /etc/rc.common\n", "\nUSE_PROCD=1\n", "\nSTART=95\n",
			"procd_set_param command \"$PROG\"", "\nJNRELAY_USER=jnrelay\n", "procd_set_param user \"$JNRELAY_USER\"", "procd_set_param term_timeout",
			"config_load jnrelay", "procd_send_signal jnrelay relayd HUP",
			"procd_set_param no_new_privs 1", "procd_set_param capabilities \"$CAPABILITIES\"", "procd_add_jail relayd"} {
			if !strings.Contains(init, want) {
				t.Errorf("%s: init script lacks %q", name, want)
			}
		}
		// The scripts as shipped must parse (sh -n); dash stands in for
		// busybox ash.
		for _, s := range []struct {
			what string
			data []byte
		}{{"etc/init.d/jnrelay", didx["etc/init.d/jnrelay"].data}, {"postinst", cidx["postinst"].data}, {"prerm", cidx["prerm"].data}} {
			cmd := exec.Command("sh", "-n")
			cmd.Stdin = bytes.NewReader(s.data)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Errorf("%s: sh -n %s: %v\n%s", name, s.what, err, out)
			}
		}
	}
}

// TestShellScripts parses every shell script of the packaging with its
// interpreter (-n) and runs shellcheck on them when it is installed.
func TestShellScripts(t *testing.T) {
	root := repoRoot(t)
	scripts := map[string]string{ // path → interpreter
		"image/package.sh":           "bash",
		"image/debian/postinst":      "bash",
		"image/debian/prerm":         "bash",
		"image/debian/postrm":        "bash",
		"image/openwrt/postinst":     "sh",
		"image/openwrt/prerm":        "sh",
		"image/openwrt/jnrelay.init": "sh",
	}
	var paths []string
	for p, sh := range scripts {
		full := filepath.Join(root, p)
		paths = append(paths, full)
		if out, err := exec.Command(sh, "-n", full).CombinedOutput(); err != nil {
			t.Errorf("%s -n %s: %v\n%s", sh, p, err, out)
		}
		b, err := os.ReadFile(full)
		if err != nil {
			t.Fatal(err)
		}
		// Scripts that run on their own fail on the first error; the
		// OpenWrt ones are sourced by or source OpenWrt's shell library and
		// say why they cannot.
		if sh == "bash" && !strings.Contains(string(b), "\nset -euo pipefail\n") {
			t.Errorf("%s does not set -euo pipefail", p)
		}
	}
	if _, err := exec.LookPath("shellcheck"); err != nil {
		t.Log("shellcheck not installed (tests/deps.sh installs it): skipped")
		return
	}
	sort.Strings(paths)
	if out, err := exec.Command("shellcheck", paths...).CombinedOutput(); err != nil {
		t.Errorf("shellcheck: %v\n%s", err, out)
	}
}

// TestReproducible builds the amd64 artifacts a second time from the same
// binaries and expects the same bytes.
func TestReproducible(t *testing.T) {
	a := artifacts(t)
	dist2 := t.TempDir()
	if out, err := packageSh(repoRoot(t), a.bins, dist2, "amd64"); err != nil {
		t.Fatalf("image/package.sh amd64: %v\n%s", err, out)
	}
	for _, name := range []string{
		"jnrelay-overlay-amd64.tar.gz",
		fmt.Sprintf("jnrelay_%s_amd64.deb", a.version),
		fmt.Sprintf("jnrelay_%s_x86_64.ipk", a.version),
	} {
		if h1, h2 := sha256File(t, a.path(name)), sha256File(t, filepath.Join(dist2, name)); h1 != h2 {
			t.Errorf("%s differs between two builds (%s, %s)", name, h1, h2)
		}
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// TestDefaultConfig checks that relayd accepts the configuration a fresh
// device starts from.
func TestDefaultConfig(t *testing.T) {
	a := artifacts(t)
	for _, cfg := range []string{filepath.Join(repoRoot(t), "image", "relayd.default.json"), filepath.Join(repoRoot(t), "image", "openwrt", "relayd.default.json")} {
		if out, err := exec.Command(a.hostBinary(t), "-check-config", cfg).CombinedOutput(); err != nil {
			t.Fatalf("relayd -check-config %s: %v\n%s", cfg, err, out)
		}
	}
	var openwrt config.Config
	if b, err := os.ReadFile(filepath.Join(repoRoot(t), "image", "openwrt", "relayd.default.json")); err != nil || json.Unmarshal(b, &openwrt) != nil || openwrt.PortMapping.Enabled() {
		t.Fatalf("the OpenWrt default configuration must turn port mapping off (fw4 opens the ports): %+v %v", openwrt.PortMapping, err)
	}
}

func copyFile(t *testing.T, src, dst string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		t.Fatal(err)
	}
}
