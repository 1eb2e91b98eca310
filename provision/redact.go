package provision

import (
	"fmt"
	"slices"

	"github.com/jnrelay/jnrelay/config"
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
// as config.Service.DefaultName names them), turn.secret by itself. An xmpp secret is
// kept only for an entry that still goes to the same place (sameDestination:
// type, server, JID, domain and ca_file unchanged): otherwise a writer
// could send the secret it cannot read to a server of its choice. A
// placeholder with no current secret behind it is left as it is (see
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
		if !ok || !sameDestination(*s, cur) {
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

// serviceName is the name a service is known by (config.Service.DefaultName).
func serviceName(s config.Service) string { return s.DefaultName() }

// sameDestination reports whether a secret of service a may stay with b:
// both send it to the same place (type, server, account JID or component
// domain) trusting the same certificates (ca_file).
func sameDestination(a, b config.Service) bool {
	return a.Type == b.Type && a.Server == b.Server && a.JID == b.JID && a.Domain == b.Domain && a.CAFile == b.CAFile
}

// unresolvedPlaceholders names the placeholders Unredact could not
// replace: the document asks to keep a secret that does not exist (a new
// or renamed service) or that would go elsewhere (a service whose
// destination changed, compared with current), which must not be saved as
// the literal secret.
func unresolvedPlaceholders(cfg, current config.Config) []FieldError {
	var out []FieldError
	byName := make(map[string]config.Service, len(current.XMPP))
	for _, s := range current.XMPP {
		byName[serviceName(s)] = s
	}
	msg := func(s config.Service, what string) string {
		if cur, ok := byName[serviceName(s)]; ok && !sameDestination(s, cur) {
			return fmt.Sprintf("is the redaction placeholder %q but the service's server, JID, domain or ca_file changed, so its current %s is not carried over to the new destination: send the secret itself", Placeholder, what)
		}
		return fmt.Sprintf("is the redaction placeholder %q but there is no current %s of a service named %q to keep: send the secret itself", Placeholder, what, serviceName(s))
	}
	for i, s := range cfg.XMPP {
		if s.Secret == Placeholder {
			out = append(out, FieldError{Field: fmt.Sprintf("xmpp[%d].secret", i), Message: msg(s, "secret")})
		}
		if s.Password == Placeholder {
			out = append(out, FieldError{Field: fmt.Sprintf("xmpp[%d].password", i), Message: msg(s, "password")})
		}
	}
	if cfg.TURN.Secret == Placeholder {
		out = append(out, FieldError{Field: "turn.secret", Message: fmt.Sprintf("is the redaction placeholder %q but there is no current TURN secret to keep: send the secret itself", Placeholder)})
	}
	return out
}
