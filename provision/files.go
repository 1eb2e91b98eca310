package provision

import (
	"fmt"

	"github.com/jnrelay/jnrelay/config"
)

// networkFileChanges is what a write arriving on the TCP (bearer token)
// listener may not do with the files a configuration names: name a file
// that the current configuration (cur, valid when curOK) does not name at
// the same place, or keep a secret file for a service whose destination
// changed (the file's secret would go to the new server). The token may be
// held by whoever claimed the web page and crosses the LAN in plain HTTP,
// so only the unix socket's root or admin user chooses files. Removing a
// file, or keeping it unchanged, is fine.
func networkFileChanges(cur config.Config, curOK bool, next config.Config) []FieldError {
	byName := map[string]config.Service{}
	if curOK {
		for _, s := range cur.XMPP {
			byName[serviceName(s)] = s
		}
	}
	var out []FieldError
	for i, s := range next.XMPP {
		c, known := byName[serviceName(s)]
		for _, f := range []struct {
			key, val, old string
			secret        bool
		}{
			{"secret_file", s.SecretFile, c.SecretFile, true},
			{"password_file", s.PasswordFile, c.PasswordFile, true},
			{"ca_file", s.CAFile, c.CAFile, false},
		} {
			field := fmt.Sprintf("xmpp[%d].%s", i, f.key)
			switch {
			case f.val == "":
			case !known || f.val != f.old:
				out = append(out, FieldError{Field: field, Message: "can be set only through the unix socket, not over the network"})
			case f.secret && !sameDestination(s, c):
				out = append(out, FieldError{Field: field, Message: "the service's server, JID, domain or ca_file changed: over the network its secret file does not follow it; send the secret itself or change it through the unix socket"})
			}
		}
	}
	for _, f := range []struct{ field, val, old string }{
		{"turn.secret_file", next.TURN.SecretFile, cur.TURN.SecretFile},
		{"turn.builtin.cert_file", next.TURN.Builtin.CertFile, cur.TURN.Builtin.CertFile},
		{"turn.builtin.key_file", next.TURN.Builtin.KeyFile, cur.TURN.Builtin.KeyFile},
	} {
		if f.val != "" && (!curOK || f.val != f.old) {
			out = append(out, FieldError{Field: f.field, Message: "can be set only through the unix socket, not over the network"})
		}
	}
	return out
}
