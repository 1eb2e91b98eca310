package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestReadFileRule is every way a configuration writer has tried to make
// relayd read a file it should not: each must be refused, and the files
// that follow the rule read.
func TestReadFileRule(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "etc")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "relayd.json")
	write := func(name string, data []byte, perm os.FileMode) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	write("relayd.json", []byte("{}"), 0o600)
	write("relayd.json.last-good", []byte("{}"), 0o600)
	write(".relayd.json.tmp-0123", []byte("{}"), 0o600)
	write("pw", []byte("secret\n"), 0o600)
	write("pw-group", []byte("secret\n"), 0o640)
	write("ca-world", []byte("cert"), 0o644)
	write("world-readable", []byte("secret"), 0o644)
	write("world-writable", []byte("secret"), 0o606)
	write("group-writable", []byte("secret"), 0o620)
	write("big", make([]byte, MaxFileSize+1024), 0o600) // 65 KiB
	write("max", make([]byte, MaxFileSize), 0o600)
	outside := filepath.Join(parent, "outside")
	if err := os.WriteFile(outside, []byte("not yours"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]string{"link-out": outside, "link-in": filepath.Join(dir, "pw"), "link-zero": "/dev/zero"} {
		if err := os.Symlink(target, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	write("sub/pw", []byte("secret"), 0o600)

	cases := []struct {
		name string
		kind FileKind
		want string // "" = read; else a part of the error
	}{
		{"pw", KindSecret, ""},
		{filepath.Join(dir, "pw"), KindSecret, ""},
		{"sub/../pw", KindSecret, ""},
		{"pw-group", KindSecret, ""}, // root:root or relayd's group
		{"ca-world", KindCertificate, ""},
		{"max", KindSecret, ""},
		{"link-out", KindSecret, "symbolic link"},
		{"link-in", KindSecret, "symbolic link"},
		{"link-zero", KindSecret, "symbolic link"},
		{"../outside", KindSecret, ErrFileOutside.Error()},
		{outside, KindSecret, ErrFileOutside.Error()},
		{"/etc/shadow", KindSecret, ErrFileOutside.Error()},
		{"/etc/passwd", KindCertificate, ErrFileOutside.Error()},
		{"/dev/zero", KindSecret, ErrFileOutside.Error()},
		{"/proc/self/environ", KindSecret, ErrFileOutside.Error()},
		{"/nonexistent/file", KindSecret, ErrFileOutside.Error()},
		{"sub/pw", KindSecret, ErrFileOutside.Error()},
		{dir, KindSecret, ErrFileOutside.Error()},
		{"relayd.json", KindSecret, "configuration itself"},
		{"relayd.json.last-good", KindSecret, "configuration itself"},
		{".relayd.json.tmp-0123", KindSecret, "hidden"},
		{"fifo", KindSecret, "not a regular file"},
		{"sub", KindSecret, "not a regular file"},
		{"big", KindSecret, "larger than 65536 bytes"},
		{"world-writable", KindSecret, "writable by group or others"},
		{"world-writable", KindCertificate, "writable by group or others"},
		{"group-writable", KindSecret, "writable by group or others"},
		{"world-readable", KindSecret, "readable by others"},
		{"missing", KindSecret, "does not exist"},
		{"", KindSecret, "empty path"},
	}
	for _, c := range cases {
		data, err := ReadFile(cfgPath, c.name, c.kind)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%q: %v", c.name, err)
		case c.want != "" && err == nil:
			t.Errorf("%q: read %d bytes, want an error with %q", c.name, len(data), c.want)
		case c.want != "" && !strings.Contains(err.Error(), c.want):
			t.Errorf("%q: %v, want %q", c.name, err, c.want)
		}
	}
	if _, err := ReadFile("", "pw", KindSecret); !errors.Is(err, ErrNoConfigDir) {
		t.Errorf("no configuration path: %v", err)
	}
}

// TestReadFileOutsideTellsNothing: the answer for a path outside the
// directory is the same whether something is there or not.
func TestReadFileOutsideTellsNothing(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "relayd.json")
	var msgs []string
	for _, p := range []string{"/etc/passwd", "/nonexistent/passwd", "/root", "/dev/zero", "../../etc/hostname"} {
		_, err := ReadFile(cfgPath, p, KindSecret)
		if !errors.Is(err, ErrFileOutside) {
			t.Fatalf("%s: %v", p, err)
		}
		msgs = append(msgs, err.Error())
	}
	for _, m := range msgs[1:] {
		if m != msgs[0] {
			t.Fatalf("answers differ: %q vs %q", msgs[0], m)
		}
	}
}

// TestReadFileOwners needs root to give files away: a file another user
// owns, or a secret readable by a foreign group, is refused.
func TestReadFileOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relayd.json")
	for _, c := range []struct {
		name     string
		uid, gid int
		perm     os.FileMode
		want     string
	}{
		{"foreign-owner", 4242, 0, 0o600, "owned by uid 4242"},
		{"foreign-group", 0, 4242, 0o640, "readable by group 4242"},
		{"foreign-group-unreadable", 0, 4242, 0o600, ""},
	} {
		p := filepath.Join(dir, c.name)
		if err := os.WriteFile(p, []byte("secret"), c.perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, c.uid, c.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, c.perm); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFile(cfgPath, c.name, KindSecret)
		if (c.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), c.want)) {
			t.Errorf("%s: %v, want %q", c.name, err, c.want)
		}
	}
}

// TestValidateChecksFiles: validation applies the same rule, so a
// configuration naming /etc/shadow or a world-readable secret never
// reaches the daemon.
func TestValidateChecksFiles(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relayd.json")
	if err := os.WriteFile(filepath.Join(dir, "open"), []byte("pw"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "open"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ doc, want string }{
		{`{"xmpp": [{"type": "client", "jid": "r@example.org", "password_file": "/etc/shadow"}]}`, "xmpp[0].password_file: " + ErrFileOutside.Error()},
		{`{"xmpp": [{"type": "client", "jid": "r@example.org", "password_file": "open"}]}`, "xmpp[0].password_file: " + filepath.Join(dir, "open") + " is readable by others"},
		{`{"xmpp": [{"type": "client", "jid": "r@example.org", "password": "p", "ca_file": "/etc/ssl/certs/ca-certificates.crt"}]}`, "xmpp[0].ca_file: " + ErrFileOutside.Error()},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret_file": "/dev/zero"}]}`, "xmpp[0].secret_file: " + ErrFileOutside.Error()},
		{`{"turn": {"host": "turn.example.org", "secret_file": "relayd.json"}}`, "turn.secret_file: " + cfgPath + " is the configuration itself"},
		{`{"xmpp": [{"type": "component", "server": "h:1", "domain": "d", "secret": "s", "allow_plain": true}]}`, "xmpp[0].allow_plain: only for type client"},
	} {
		_, err := ParseAt(strings.NewReader(c.doc), cfgPath)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got  %v\n want %q", c.doc, err, c.want)
		}
	}
}
