package provision

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// tcpToken is the bearer token of an env started with a TCP listener.
func (e *env) tcpToken(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(e.dir, "state", TokenFile))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(raw))
}

// writeSecret puts a secret file (0600) in the configuration's directory.
func (e *env) writeSecret(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(e.dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// donorWith is baseDoc's services with the donor account replaced.
func donorWith(donor string) string {
	return `{"public_address": "203.0.113.10", "xmpp": [
  {"name": "provider", "type": "component", "server": "127.0.0.1:5347", "domain": "relay.example.org", "secret": "********"},
  ` + donor + `], "turn": {"host": "turn.example.org", "secret": "********"}}`
}

// TestNetworkWriteOfFilesRefused: whoever holds the TCP token (the first
// to claim the web page; it crosses the LAN in plain HTTP) cannot make
// relayd read a file of its choice (/etc/shadow, the configuration) and
// hand it to a server of its choice. The unix socket's root may name files.
func TestNetworkWriteOfFilesRefused(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	e.writeSecret(t, "password", "file-password\n")
	e.writeSecret(t, "other", "other-password\n")
	auth := withHeaders(jsonCT, "Authorization", "Bearer "+e.tcpToken(t))
	before, applies := e.fileBytes(t), e.d.applyCount()

	attacks := []struct{ name, doc, field string }{
		{"password_file of the shadow file", donorWith(`{"name": "donor", "type": "client", "server": "203.0.113.66:5222", "jid": "relay@example.net", "password_file": "/etc/shadow", "allow_plain": true}`), "xmpp[1].password_file"},
		{"password_file of the configuration", donorWith(`{"name": "donor", "type": "client", "jid": "relay@example.net", "password_file": "relayd.json"}`), "xmpp[1].password_file"},
		{"password_file in the directory", donorWith(`{"name": "donor", "type": "client", "jid": "relay@example.net", "password_file": "password"}`), "xmpp[1].password_file"},
		{"ca_file", donorWith(`{"name": "donor", "type": "client", "jid": "relay@example.net", "password": "********", "ca_file": "password"}`), "xmpp[1].ca_file"},
		{"secret_file of a new component", donorWith(`{"name": "evil", "type": "component", "server": "203.0.113.66:5347", "domain": "relay.evil.example", "secret_file": "password"}`), "xmpp[1].secret_file"},
		{"turn.secret_file", `{"public_address": "203.0.113.10", "turn": {"host": "turn.example.org", "secret_file": "password"}}`, "turn.secret_file"},
		{"turn.builtin.cert_file", `{"public_address": "203.0.113.10", "turn": {"builtin": {"enabled": true, "tls_port": 5349, "cert_file": "password", "key_file": "other"}}}`, "turn.builtin.cert_file"},
		{"turn.builtin.key_file", `{"public_address": "203.0.113.10", "turn": {"builtin": {"enabled": true, "tls_port": 5349, "cert_file": "password", "key_file": "other"}}}`, "turn.builtin.key_file"},
	}
	for _, a := range attacks {
		for _, m := range []string{"PUT", "PATCH"} {
			r := e.do(t, m, e.tcpURL+"/v1/config", a.doc, auth)
			if r.status != 403 || decodeErr(t, r).Code != CodeFilesLocalOnly || !hasField(decodeErr(t, r), a.field) {
				t.Errorf("%s over TCP (%s): %s", a.name, m, r)
			}
		}
	}
	e.unchanged(t, before, applies)

	// The unix socket's root may name a file in the configuration's
	// directory.
	withFile := donorWith(`{"name": "donor", "type": "client", "jid": "relay@example.net", "password_file": "password"}`)
	if r := e.do(t, "PUT", "/v1/config", withFile, jsonCT); r.status != 200 {
		t.Fatalf("unix socket PUT of password_file: %s", r)
	}
	saved, _, err := e.store.Load()
	if err != nil || saved.XMPP[1].PasswordFile != "password" {
		t.Fatalf("saved %+v %v", saved.XMPP, err)
	}
	if secret, err := saved.XMPP[1].ResolveSecret(saved.Path); err != nil || secret != "file-password" {
		t.Fatalf("secret %q %v", secret, err)
	}
	// ...but not one outside it, and the answer tells nothing about it.
	for _, p := range []string{"/etc/shadow", "/nonexistent"} {
		r := e.do(t, "PUT", "/v1/config", donorWith(`{"name": "donor", "type": "client", "jid": "relay@example.net", "password_file": "`+p+`"}`), jsonCT)
		if r.status != 400 || !strings.Contains(string(r.body), "must name a file directly in the configuration file's directory") {
			t.Errorf("unix socket PUT of %s: %s", p, r)
		}
	}

	// Over TCP, the file kept as it is, with other changes, is fine...
	after := e.fileBytes(t)
	keep := `{"channel": {"max_kbps": 64}}`
	if r := e.do(t, "PATCH", e.tcpURL+"/v1/config", keep, withHeaders(auth, "Content-Type", "application/merge-patch+json")); r.status != 200 {
		t.Fatalf("TCP PATCH keeping the file: %s", r)
	}
	// ...but the file does not follow the account to another server,
	// nor to another account on the same server.
	for _, moved := range []string{
		`{"name": "donor", "type": "client", "server": "203.0.113.66:5222", "jid": "relay@example.net", "password_file": "password"}`,
		`{"name": "donor", "type": "client", "jid": "attacker@example.net", "password_file": "password"}`,
	} {
		r := e.do(t, "PUT", e.tcpURL+"/v1/config", donorWith(moved), auth)
		if r.status != 403 || !hasField(decodeErr(t, r), "xmpp[1].password_file") {
			t.Errorf("TCP PUT moving the file: %s", r)
		}
	}
	// Replacing the file with a password is the network's way.
	if r := e.do(t, "PUT", e.tcpURL+"/v1/config", donorWith(`{"name": "donor", "type": "client", "jid": "relay@example.net", "password": "typed"}`), auth); r.status != 200 {
		t.Fatalf("TCP PUT replacing the file with a password: %s", r)
	}
	if string(e.fileBytes(t)) == string(after) {
		t.Fatal("nothing saved")
	}
}

// TestPlaceholderDoesNotFollowANewDestination: a secret sent back as
// ******** stays only with an entry that still goes where it went.
func TestPlaceholderDoesNotFollowANewDestination(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	auth := withHeaders(jsonCT, "Authorization", "Bearer "+e.tcpToken(t))
	before, applies := e.fileBytes(t), e.d.applyCount()
	component := `{"name": "provider", "type": "component", "server": "127.0.0.1:5347", "domain": "relay.example.org", "secret": "********"}`
	donor := `{"name": "donor", "type": "client", "jid": "relay@example.net", "password": "********"}`
	doc := func(c, d string) string {
		return `{"public_address": "203.0.113.10", "xmpp": [` + c + `, ` + d + `], "turn": {"host": "turn.example.org", "secret": "********"}}`
	}
	for _, c := range []struct{ name, doc, field string }{
		{"client server", doc(component, strings.Replace(donor, `"jid"`, `"server": "203.0.113.66:5222", "jid"`, 1)), "xmpp[1].password"},
		{"client jid", doc(component, strings.Replace(donor, "relay@example.net", "relay@evil.example", 1)), "xmpp[1].password"},
		{"client plain to a new server", doc(component, strings.Replace(donor, `"jid"`, `"server": "203.0.113.66:5222", "allow_plain": true, "jid"`, 1)), "xmpp[1].password"},
		{"component server", doc(strings.Replace(component, "127.0.0.1:5347", "203.0.113.66:5347", 1), donor), "xmpp[0].secret"},
		{"component domain", doc(strings.Replace(component, "relay.example.org", "relay.evil.example", 1), donor), "xmpp[0].secret"},
	} {
		for _, target := range []string{"/v1/config", e.tcpURL + "/v1/config"} {
			r := e.do(t, "PUT", target, c.doc, auth)
			de := decodeErr(t, r)
			if r.status != 400 || !hasField(de, c.field) || !strings.Contains(string(r.body), "changed") {
				t.Errorf("%s (%s): %s", c.name, target, r)
			}
		}
	}
	e.unchanged(t, before, applies)
	// Unchanged destinations keep their secrets.
	if r := e.do(t, "PUT", e.tcpURL+"/v1/config", doc(component, strings.Replace(donor, `"jid"`, `"policy": "roster", "jid"`, 1)), auth); r.status != 200 {
		t.Fatalf("unchanged destination: %s", r)
	}
	saved, _, err := e.store.Load()
	if err != nil || saved.XMPP[1].Password != "account-password" || saved.XMPP[0].Secret != "component-secret" {
		t.Fatalf("saved %+v %v", saved.XMPP, err)
	}
}

// TestStoreNarrowsModes: a configuration file found world-readable (or
// group-writable) is written 0600, or 0640 when its group could read it,
// and so is its last-good copy.
func TestStoreNarrowsModes(t *testing.T) {
	for _, c := range []struct {
		old, want os.FileMode
	}{
		{0o604, 0o600},
		{0o644, 0o640},
		{0o666, 0o640},
		{0o777, 0o640},
		{0o600, 0o600},
		{0o640, 0o640},
		{0o400, 0o600},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "relayd.json")
		if err := os.WriteFile(path, []byte(baseDoc), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, c.old); err != nil {
			t.Fatal(err)
		}
		s := NewStore(path)
		cfg, _, err := s.Load()
		if err != nil {
			t.Fatal(err)
		}
		cfg.Channel.MaxKbps = 64
		if _, err := s.Save(cfg); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, path + LastGoodSuffix} {
			fi, err := os.Stat(p)
			if err != nil || fi.Mode().Perm() != c.want {
				t.Errorf("old mode %04o: %s is %v (%v), want %04o", c.old, filepath.Base(p), fi.Mode(), err, c.want)
			}
		}
	}
}

// TestClientReadsOverTCPNeverSeeSecrets: what the network gets back names
// files but holds no secret.
func TestClientReadsOverTCPNeverSeeSecrets(t *testing.T) {
	e := startAPI(t, "", APIOptions{TCP: "127.0.0.1:0"}, 0, -1)
	c := NewTCPClient(e.tcpURL, e.tcpToken(t))
	defer c.Close()
	doc, _, err := c.GetConfig(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"component-secret", "account-password", "turn-secret"} {
		if strings.Contains(string(doc), s) {
			t.Fatalf("%s in %s", s, doc)
		}
	}
}
