//go:build linux

package main

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"strings"
)

// params are the settings init takes from the kernel command line. Names
// carry a "jnrelay." prefix: the kernel treats dotted words as parameters of
// a module named by the prefix and leaves them alone, so they reach init
// only through /proc/cmdline.
type params struct {
	// Config is a relayd configuration (jnrelay.config=BASE64 of the JSON
	// file) that replaces the one baked into the image; nil = keep it.
	Config []byte
	// Addr is eth0's address (jnrelay.ip=, default 10.0.2.15/24: the
	// address qemu's user network forwards host ports to).
	Addr netip.Prefix
	// Gateway is the default route (jnrelay.gw=, default 10.0.2.2: qemu's
	// user network's alias of the host, whose loopback services the guest
	// reaches there).
	Gateway netip.Addr
}

// parseCmdline reads init's parameters from the kernel command line. Words
// are separated by white space (the kernel's quoting is not needed: none of
// the values contains a space).
func parseCmdline(cmdline string) (params, error) {
	p := params{
		Addr:    netip.MustParsePrefix("10.0.2.15/24"),
		Gateway: netip.MustParseAddr("10.0.2.2"),
	}
	for _, word := range strings.Fields(cmdline) {
		key, val, _ := strings.Cut(word, "=")
		var err error
		switch key {
		case "jnrelay.config":
			if p.Config, err = base64.StdEncoding.DecodeString(val); err != nil {
				return p, fmt.Errorf("jnrelay.config: not standard base64 (base64 -w0 relayd.json): %w", err)
			}
		case "jnrelay.ip":
			if p.Addr, err = netip.ParsePrefix(val); err != nil || !p.Addr.Addr().Is4() {
				return p, fmt.Errorf("jnrelay.ip: want an IPv4 address with prefix length like 10.0.2.15/24, got %q", val)
			}
		case "jnrelay.gw":
			if p.Gateway, err = netip.ParseAddr(val); err != nil || !p.Gateway.Is4() {
				return p, fmt.Errorf("jnrelay.gw: want an IPv4 address, got %q", val)
			}
		}
	}
	if !p.Addr.Contains(p.Gateway) {
		return p, fmt.Errorf("gateway %s is outside eth0's network %s", p.Gateway, p.Addr.Masked())
	}
	return p, nil
}
