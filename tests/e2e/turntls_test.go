package e2e

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/jnrelay/jnrelay/internal/testcert"
)

// writeSelfSigned writes a self-signed certificate for 127.0.0.1 (0644)
// and its key (0600) into dir and returns the certificate's path.
func writeSelfSigned(t *testing.T, dir, certName, keyName string) string {
	t.Helper()
	certPath := filepath.Join(dir, certName)
	testcert.New(t, "127.0.0.1").Write(t, certPath, filepath.Join(dir, keyName))
	return certPath
}

// verifyPresented completes a TLS handshake with the server at the
// loopback port, trusting only the certificate at certPath.
func verifyPresented(t *testing.T, port int, certPath string) {
	t.Helper()
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(certPEM) {
		t.Fatalf("%s holds no certificate", certPath)
	}
	c, err := tls.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS handshake with relayd: %v", err)
	}
	c.Close()
}
