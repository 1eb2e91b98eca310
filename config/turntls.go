package config

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
)

// validateTURNTLS checks turn.builtin's TLS listener: a port of its own
// and a certificate and key that can be read (under the rule for files)
// and belong together.
func (c Config) validateTURNTLS(p *fieldErrors) {
	b := c.TURN.Builtin
	if b.TLSPort == 0 {
		for _, k := range []struct{ name, val string }{{"cert_file", b.CertFile}, {"key_file", b.KeyFile}, {"tls_host", b.TLSHost}} {
			if k.val != "" {
				p.addf("turn.builtin."+k.name, "only with turn.builtin.tls_port")
			}
		}
		return
	}
	switch {
	case b.TLSPort < 1 || b.TLSPort > 65535:
		p.addf("turn.builtin.tls_port", "%d is outside 1-65535 (0 = off)", b.TLSPort)
	case b.TCP && b.TLSPort == b.Port:
		p.addf("turn.builtin.tls_port", "%d is turn.builtin.port, where TURN over TCP listens: TLS needs a port of its own", b.TLSPort)
	}
	if b.TLSHost != "" {
		if _, err := netip.ParseAddr(b.TLSHost); err != nil {
			if err := checkDomain(b.TLSHost); err != nil {
				p.addf("turn.builtin.tls_host", "not an IP address or host name: %v", err)
			}
		}
	}
	if _, err := b.ResolveCertificate(c.Path); err != nil {
		var field *certFieldError
		if errors.As(err, &field) {
			p.addf("turn.builtin."+field.field, "%v", field.err)
		} else {
			p.addf("turn.builtin.cert_file", "%v", err)
		}
	}
}

// certFieldError says which of cert_file and key_file a failure is about.
type certFieldError struct {
	field string
	err   error
}

func (e *certFieldError) Error() string { return "turn.builtin." + e.field + ": " + e.err.Error() }
func (e *certFieldError) Unwrap() error { return e.err }

// ResolveCertificate reads the TLS listener's certificate chain and key
// (configPath is the configuration's Path: see ReadFile). Read when the
// TURN server starts, so a renewed certificate is taken up by the next
// configuration apply.
func (b BuiltinTURN) ResolveCertificate(configPath string) (tls.Certificate, error) {
	switch {
	case b.CertFile == "":
		return tls.Certificate{}, &certFieldError{"cert_file", errors.New("required with turn.builtin.tls_port")}
	case b.KeyFile == "":
		return tls.Certificate{}, &certFieldError{"key_file", errors.New("required with turn.builtin.tls_port")}
	}
	certPEM, err := ReadFile(configPath, b.CertFile, KindCertificate)
	if err != nil {
		return tls.Certificate{}, &certFieldError{"cert_file", err}
	}
	keyPEM, err := ReadFile(configPath, b.KeyFile, KindSecret)
	if err != nil {
		return tls.Certificate{}, &certFieldError{"key_file", err}
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return tls.Certificate{}, &certFieldError{"cert_file", fmt.Errorf("with key_file: %w", err)}
	}
	return cert, nil
}
