//go:build linux

package main

import (
	"encoding/base64"
	"net/netip"
	"strings"
	"testing"
)

func TestParseCmdlineDefaults(t *testing.T) {
	p, err := parseCmdline("console=ttyAMA0 quiet\n")
	if err != nil {
		t.Fatal(err)
	}
	if p.Config != nil || p.Addr != netip.MustParsePrefix("10.0.2.15/24") || p.Gateway != netip.MustParseAddr("10.0.2.2") {
		t.Fatalf("defaults: %+v", p)
	}
}

func TestParseCmdlineValues(t *testing.T) {
	cfg := `{"public_address":"127.0.0.1","ports":{"min":40000,"max":40003}}`
	line := "console=ttyAMA0 jnrelay.config=" + base64.StdEncoding.EncodeToString([]byte(cfg)) + " jnrelay.ip=192.0.2.7/28 jnrelay.gw=192.0.2.1 panic=-1"
	p, err := parseCmdline(line)
	if err != nil {
		t.Fatal(err)
	}
	if string(p.Config) != cfg {
		t.Errorf("config %q, want %q", p.Config, cfg)
	}
	if p.Addr != netip.MustParsePrefix("192.0.2.7/28") || p.Gateway != netip.MustParseAddr("192.0.2.1") {
		t.Errorf("network %s via %s", p.Addr, p.Gateway)
	}
}

func TestParseCmdlineErrors(t *testing.T) {
	for line, want := range map[string]string{
		"jnrelay.config=%%%":                          "jnrelay.config",
		"jnrelay.ip=10.0.2.15":                        "jnrelay.ip",
		"jnrelay.ip=2001:db8::1/64":                   "jnrelay.ip",
		"jnrelay.gw=gateway":                          "jnrelay.gw",
		"jnrelay.ip=192.0.2.7/28 jnrelay.gw=10.0.2.2": "outside",
	} {
		if _, err := parseCmdline(line); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %q", line, err, want)
		}
	}
}
