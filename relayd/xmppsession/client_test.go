package xmppsession

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"math/big"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp/jid"
)

// TestPlainOnlyWhenAllowed: the mechanisms offered, best first.
func TestPlainOnlyWhenAllowed(t *testing.T) {
	names := func(ms []sasl.Mechanism) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Name)
		}
		return out
	}
	for _, c := range []struct {
		plus, plain bool
		want        []string
	}{
		{true, false, []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"}},
		{false, false, []string{"SCRAM-SHA-256", "SCRAM-SHA-1"}},
		{true, true, []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN"}},
		{false, true, []string{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}},
	} {
		if got := names(mechanisms(c.plus, c.plain)); !slices.Equal(got, c.want) {
			t.Errorf("plus=%v plain=%v: %v, want %v", c.plus, c.plain, got, c.want)
		}
	}
}

// TestPlainOnlyServerGetsNoPassword is the attack: a configuration writer
// points an account at a server of its choice (with a certificate the
// relay trusts) that offers only SASL PLAIN, to be handed the password.
// Without allow_plain the server gets no <auth/>; with it, it gets the
// password (which shows the fake server would have caught it).
func TestPlainOnlyServerGetsNoPassword(t *testing.T) {
	for _, allow := range []bool{false, true} {
		t.Run(fmt.Sprintf("allow_plain=%v", allow), func(t *testing.T) {
			ln, roots := plainOnlyServer(t)
			got := make(chan string, 4)
			go servePlainOnly(ln, got)
			s, err := NewClient(ClientConfig{Name: "donor", JID: jid.MustParse("relay@example.test"), Password: "donor-password",
				Server: ln.Addr().String(), DirectTLS: true, RootCAs: roots, AllowPlain: allow,
				Backoff: Backoff{Min: time.Minute, Max: time.Minute}})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { defer close(done); _ = s.Run(ctx) }()
			defer func() { cancel(); <-done }()
			var saw string
			select {
			case saw = <-got:
			case <-time.After(15 * time.Second):
				t.Fatal("the client never finished talking to the server")
			}
			leaked := strings.Contains(saw, "donor-password")
			if leaked != allow {
				t.Fatalf("server saw %q", saw)
			}
		})
	}
}

// plainOnlyServer listens with direct TLS for example.test and returns the
// pool that trusts it.
func plainOnlyServer(t *testing.T) (net.Listener, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example.test"}, DNSNames: []string{"example.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, roots
}

// servePlainOnly answers one stream with features offering only PLAIN and
// reports the client's next element (an <auth/>'s decoded payload) or
// "closed".
func servePlainOnly(ln net.Listener, got chan<- string) {
	c, err := ln.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	dec := xml.NewDecoder(c)
	if _, err := nextStart(dec); err != nil {
		got <- "closed before the stream"
		return
	}
	fmt.Fprint(c, `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='s1' from='example.test' version='1.0'>`+
		`<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>`)
	start, err := nextStart(dec)
	if err != nil {
		got <- "closed"
		return
	}
	var payload string
	_ = dec.DecodeElement(&payload, &start)
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(payload))
	got <- start.Name.Local + " " + string(raw)
	fmt.Fprint(c, `<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure></stream:stream>`)
}
