package daemon

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/internal/testcert"
	"github.com/jnrelay/jnrelay/internal/testport"
)

// writeTURNCert writes a fresh self-signed certificate for 127.0.0.1
// named cn into dir as turn.crt and turn.key, and returns it.
func writeTURNCert(t *testing.T, dir, cn string) *x509.Certificate {
	t.Helper()
	c := testcert.New(t, cn)
	c.Write(t, filepath.Join(dir, "turn.crt"), filepath.Join(dir, "turn.key"))
	return c.Leaf
}

// presentedCert is the common name of the certificate the server at port
// presents.
func presentedCert(t *testing.T, port int) string {
	t.Helper()
	c, err := tls.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func tlsTURNConfig(t *testing.T, dir string) config.Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.Path = filepath.Join(dir, "relayd.json")
	cfg.TURN.Secret = "a configured secret"
	b := &cfg.TURN.Builtin
	b.Enabled, b.Port, b.TLSPort, b.CertFile, b.KeyFile = true, testport.UDPAndTCP(t), testport.TCP(t), "turn.crt", "turn.key"
	return cfg
}

func TestBuiltinTURNOverTLSPart(t *testing.T) {
	dir := t.TempDir()
	writeTURNCert(t, dir, "first")
	cfg := tlsTURNConfig(t, dir)
	d := startDaemon(t, cfg)
	if ext := d.external.Load().TURN; ext == nil || ext.TLSPort != cfg.TURN.Builtin.TLSPort {
		t.Fatalf("TURN over TLS not announced: %+v", ext)
	}
	if got := presentedCert(t, cfg.TURN.Builtin.TLSPort); got != "first" {
		t.Fatalf("certificate %q, want first", got)
	}
	// A renewed certificate is taken up when the configuration is applied
	// again (SIGHUP), without restarting the server.
	srv := d.turnSrv.Load()
	writeTURNCert(t, dir, "renewed")
	if err := d.Apply(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	if got := presentedCert(t, cfg.TURN.Builtin.TLSPort); got != "renewed" || d.turnSrv.Load() != srv {
		t.Fatalf("after apply: certificate %q (want renewed), server replaced %v", got, d.turnSrv.Load() != srv)
	}
}

func TestBuiltinTURNOverTLSUnreadableCertificate(t *testing.T) {
	dir := t.TempDir()
	writeTURNCert(t, dir, "first")
	cfg := tlsTURNConfig(t, dir)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The key became readable by others after validation: refused when
	// the server starts.
	if err := os.Chmod(filepath.Join(dir, "turn.key"), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), cfg, Options{Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	ext := d.external.Load().TURN
	if !d.systemRunning(partTURN) || ext == nil || ext.TLSPort != 0 || d.turnSrv.Load().TLSAddr().IsValid() {
		t.Fatalf("TURN running %v, announced %+v: want TURN without TLS", d.systemRunning(partTURN), ext)
	}
	if c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.TURN.Builtin.TLSPort))); err == nil {
		c.Close()
		t.Fatal("something listens on the TLS port")
	}
}
