package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCertPair writes a fresh self-signed certificate (0644) and its
// key (0600) into dir.
func writeCertPair(t *testing.T, dir, certName, keyName string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "turn.example.org"},
		DNSNames: []string{"turn.example.org"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name, typ string
		der       []byte
		perm      os.FileMode
	}{{certName, "CERTIFICATE", der, 0o644}, {keyName, "PRIVATE KEY", keyDER, 0o600}} {
		path := filepath.Join(dir, f.name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.perm); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, f.perm); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuiltinTURNTLSValid(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relayd.json")
	writeCertPair(t, dir, "turn.crt", "turn.key")
	doc := `{"turn": {"builtin": {"enabled": true, "tls_port": 5349, "cert_file": "turn.crt", "key_file": "turn.key", "tls_host": "turn.example.org"}}, ` + minimal[1:]
	cfg, err := ParseAt(strings.NewReader(doc), cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := cfg.TURN.Builtin.ResolveCertificate(cfg.Path)
	if err != nil || cert.Leaf == nil || cert.Leaf.DNSNames[0] != "turn.example.org" {
		t.Fatalf("certificate %v: %v", cert.Leaf, err)
	}
	// Off by default.
	cfg, err = ParseAt(strings.NewReader(`{"turn": {"builtin": {"enabled": true}}, `+minimal[1:]), cfgPath)
	if err != nil || cfg.TURN.Builtin.TLSPort != 0 {
		t.Fatalf("tls_port %d by default (%v)", cfg.TURN.Builtin.TLSPort, err)
	}
}

func TestBuiltinTURNTLSFieldErrors(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "relayd.json")
	writeCertPair(t, dir, "a.crt", "a.key")
	writeCertPair(t, dir, "b.crt", "b.key")
	writeCertPair(t, dir, "c.crt", "c.key")
	if err := os.Chmod(filepath.Join(dir, "b.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	tlsDoc := func(fields string) string {
		return `{"turn": {"builtin": {"enabled": true, ` + fields + `}}, ` + minimal[1:]
	}
	for _, c := range []struct{ doc, want string }{
		{tlsDoc(`"tls_port": 5349`), "turn.builtin.cert_file: required with turn.builtin.tls_port"},
		{tlsDoc(`"tls_port": 5349, "cert_file": "a.crt"`), "turn.builtin.key_file: required with turn.builtin.tls_port"},
		{tlsDoc(`"tls_port": 5349, "cert_file": "missing.crt", "key_file": "a.key"`), "turn.builtin.cert_file: " + filepath.Join(dir, "missing.crt") + " does not exist"},
		{tlsDoc(`"tls_port": 5349, "cert_file": "/etc/ssl/certs/ca-certificates.crt", "key_file": "a.key"`), "turn.builtin.cert_file: " + ErrFileOutside.Error()},
		{tlsDoc(`"tls_port": 5349, "cert_file": "a.crt", "key_file": "b.key"`), "turn.builtin.key_file: " + filepath.Join(dir, "b.key") + " is readable by others"},
		{tlsDoc(`"tls_port": 5349, "cert_file": "a.crt", "key_file": "c.key"`), "turn.builtin.cert_file: with key_file"},
		{tlsDoc(`"tls_port": 5349, "cert_file": "a.crt", "key_file": "/etc/shadow"`), "turn.builtin.key_file: " + ErrFileOutside.Error()},
		{tlsDoc(`"tls_port": 70000, "cert_file": "a.crt", "key_file": "a.key"`), "turn.builtin.tls_port: 70000 is outside 1-65535"},
		{tlsDoc(`"port": 3479, "tls_port": 3479, "cert_file": "a.crt", "key_file": "a.key"`), "turn.builtin.tls_port: 3479 is turn.builtin.port"},
		{tlsDoc(`"tls_port": 5349, "cert_file": "a.crt", "key_file": "a.key", "tls_host": "bad host"`), "turn.builtin.tls_host: not an IP address or host name"},
		{tlsDoc(`"cert_file": "a.crt"`), "turn.builtin.cert_file: only with turn.builtin.tls_port"},
	} {
		_, err := ParseAt(strings.NewReader(c.doc), cfgPath)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s:\n got  %v\n want %q", c.doc, err, c.want)
		}
	}
	// Without TCP on turn.builtin.port, TLS may take that TCP port.
	if _, err := ParseAt(strings.NewReader(tlsDoc(`"tcp": false, "port": 3479, "tls_port": 3479, "cert_file": "a.crt", "key_file": "a.key"`)), cfgPath); err != nil {
		t.Fatal(err)
	}
	// A configuration not read from a file names no files.
	if _, err := ParseAt(strings.NewReader(tlsDoc(`"tls_port": 5349, "cert_file": "a.crt", "key_file": "a.key"`)), ""); err == nil || !strings.Contains(err.Error(), "turn.builtin.cert_file: "+ErrNoConfigDir.Error()) {
		t.Fatalf("no configuration directory: %v", err)
	}
}
