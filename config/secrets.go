package config

import (
	"crypto/x509"
	"fmt"
)

// The credentials a configuration holds or names: resolved when relayd
// uses them, so a secret file can change without a new configuration.

// ResolveSecret returns the service's credential: the component secret or
// the account password, read from its file when one is set (configPath is
// the configuration's Path: see ReadFile).
func (s Service) ResolveSecret(configPath string) (string, error) {
	value, file, name := s.Secret, s.SecretFile, "secret_file"
	if s.Type == ServiceClient {
		value, file, name = s.Password, s.PasswordFile, "password_file"
	}
	if file == "" {
		return value, nil
	}
	secret, err := readSecret(configPath, file)
	if err != nil {
		return "", fmt.Errorf("xmpp service %s: %s: %w", s.Name, name, err)
	}
	return secret, nil
}

// ResolveCA returns the certificates of the service's ca_file, or nil
// (the system roots) when it has none.
func (s Service) ResolveCA(configPath string) (*x509.CertPool, error) {
	if s.CAFile == "" {
		return nil, nil
	}
	pool, err := readCertPool(configPath, s.CAFile)
	if err != nil {
		return nil, fmt.Errorf("xmpp service %s: ca_file: %w", s.Name, err)
	}
	return pool, nil
}

// ResolveSecret returns the TURN shared secret, read from its file when set.
func (t TURN) ResolveSecret(configPath string) (string, error) {
	if t.SecretFile == "" {
		return t.Secret, nil
	}
	secret, err := readSecret(configPath, t.SecretFile)
	if err != nil {
		return "", fmt.Errorf("turn.secret_file: %w", err)
	}
	return secret, nil
}
