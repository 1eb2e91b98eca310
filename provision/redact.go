package provision

import (
	"fmt"
	"slices"

	"github.com/jnrelay/jnrelay/relayd/config"
)

// Placeholder stands for a secret in documents the API hands out. Sending
// it back means "keep the current secret".
const Placeholder = "********"

// Redact returns cfg with every secret (xmpp[].secret, xmpp[].password,
// turn.secret) that is set replaced by Placeholder. Empty secrets stay
// empty, so a reader can tell "set" from "not set"; secret files are paths,
// not secrets, and are kept. cfg is not modified.
func Redact(cfg config.Config) config.Config {
	out := cfg
	out.XMPP = slices.Clone(cfg.XMPP)
	for i := range out.XMPP {
		s := &out.XMPP[i]
		if s.Secret != "" {
			s.Secret = Placeholder
		}
		if s.Password != "" {
			s.Password = Placeholder
		}
	}
	if out.TURN.Secret != "" {
		out.TURN.Secret = Placeholder
	}
	return out
}

// Unredact returns newCfg with each Placeholder replaced by the secret
// current holds at the same place: xmpp entries are matched by service
// name (the name, else the domain of a component or the JID of a client,
// as config.Validate names them), turn.secret by itself. A placeholder
// with no current secret behind it is left as it is (see
// unresolvedPlaceholders). Neither argument is modified.
func Unredact(newCfg, current config.Config) config.Config {
	out := newCfg
	out.XMPP = slices.Clone(newCfg.XMPP)
	byName := make(map[string]config.Service, len(current.XMPP))
	for _, s := range current.XMPP {
		byName[serviceName(s)] = s
	}
	for i := range out.XMPP {
		s := &out.XMPP[i]
		cur, ok := byName[serviceName(*s)]
		if !ok {
			continue
		}
		if s.Secret == Placeholder && cur.Secret != "" {
			s.Secret = cur.Secret
		}
		if s.Password == Placeholder && cur.Password != "" {
			s.Password = cur.Password
		}
	}
	if out.TURN.Secret == Placeholder && current.TURN.Secret != "" {
		out.TURN.Secret = current.TURN.Secret
	}
	return out
}

// serviceName is the name config.Validate gives a service.
func serviceName(s config.Service) string {
	switch {
	case s.Name != "":
		return s.Name
	case s.Type == "client":
		return s.JID
	}
	return s.Domain
}

// unresolvedPlaceholders names the placeholders Unredact could not
// replace: the document asks to keep a secret that does not exist (a new
// or renamed service), which must not be saved as the literal secret.
func unresolvedPlaceholders(cfg config.Config) []FieldError {
	var out []FieldError
	msg := func(what string) string {
		return fmt.Sprintf("is the redaction placeholder %q but there is no current %s to keep: send the secret itself", Placeholder, what)
	}
	for i, s := range cfg.XMPP {
		if s.Secret == Placeholder {
			out = append(out, FieldError{Field: fmt.Sprintf("xmpp[%d].secret", i), Message: msg(fmt.Sprintf("secret of a service named %q", serviceName(s)))})
		}
		if s.Password == Placeholder {
			out = append(out, FieldError{Field: fmt.Sprintf("xmpp[%d].password", i), Message: msg(fmt.Sprintf("password of a service named %q", serviceName(s)))})
		}
	}
	if cfg.TURN.Secret == Placeholder {
		out = append(out, FieldError{Field: "turn.secret", Message: msg("TURN secret")})
	}
	return out
}
