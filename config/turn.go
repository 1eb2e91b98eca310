package config

import (
	"unicode"
)

// validateBuiltinTURN checks turn.builtin.* and what the built-in server
// needs of the rest of turn.
func (c Config) validateBuiltinTURN(p *fieldErrors) {
	b := c.TURN.Builtin
	if !b.Enabled {
		return
	}
	if c.TURN.Host != "" {
		p.addf("turn.builtin.enabled", "not with turn.host: announce either an external TURN server or the built-in one")
	}
	switch {
	case b.Port < 1 || b.Port > 65535:
		p.addf("turn.builtin.port", "%d is outside 1-65535", b.Port)
	case c.STUN.Enabled && b.Port == c.STUN.Port:
		p.addf("turn.builtin.port", "%d is the STUN server's port (stun.port): the built-in TURN server needs a port of its own", b.Port)
	case b.Port >= c.Ports.Min && b.Port <= c.Ports.Max:
		p.addf("turn.builtin.port", "%d is inside the relay port range %d-%d", b.Port, c.Ports.Min, c.Ports.Max)
	}
	if err := checkRealm(b.Realm); err != "" {
		p.addf("turn.builtin.realm", "%s", err)
	}
	if c.TURN.Secret != "" && c.TURN.SecretFile != "" {
		p.addf("turn.secret", "set secret or secret_file, not both")
	} else if c.TURN.SecretFile != "" {
		if _, err := readSecret(c.Path, c.TURN.SecretFile); err != nil {
			p.addf("turn.secret_file", "%v", err)
		}
	}
	if c.TURN.TTLSeconds < 60 || c.TURN.TTLSeconds > 7*86400 {
		p.addf("turn.ttl_seconds", "%d is outside 60-604800", c.TURN.TTLSeconds)
	}
	c.validateTURNTLS(p)
}

// checkRealm accepts a realm a STUN REALM attribute can carry (RFC 8489:
// fewer than 128 characters) made of printable characters without quotes
// or backslashes, which clients copy into their digests.
func checkRealm(realm string) string {
	switch {
	case realm == "":
		return "required"
	case len([]rune(realm)) >= 128:
		return "longer than 127 characters"
	}
	for _, r := range realm {
		if !unicode.IsPrint(r) || r == '"' || r == '\\' {
			return "holds a quote, a backslash or a character that is not printable"
		}
	}
	return ""
}
