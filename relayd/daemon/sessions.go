package daemon

import (
	"context"
	"fmt"
	"reflect"

	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
	"github.com/jnrelay/jnrelay/relayd/tracker"
	"github.com/jnrelay/jnrelay/relayd/xmppsession"
)

// sessionPart is a running XMPP session and the service it was started
// for.
type sessionPart struct {
	*part
	session *xmppsession.Session
	service config.Service
}

// applySessions stops removed and changed sessions and starts new and
// changed ones.
func (d *Daemon) applySessions(cfg config.Config) {
	wanted := map[string]config.Service{}
	var order []string
	for _, s := range cfg.XMPP {
		wanted[s.Name] = s
		order = append(order, s.Name)
	}
	d.mu.Lock()
	var stale []*sessionPart
	for name, p := range d.xmpp {
		if s, ok := wanted[name]; !ok || !reflect.DeepEqual(s, p.service) {
			stale = append(stale, p)
			delete(d.xmpp, name)
		}
	}
	d.order = order
	d.mu.Unlock()
	for _, p := range stale {
		p.stop()
	}
	for _, name := range order {
		d.mu.Lock()
		_, running := d.xmpp[name]
		d.mu.Unlock()
		if running {
			continue
		}
		sess, err := d.newSession(cfg, wanted[name])
		if err != nil {
			// Validation has checked everything that can be; what is left
			// (an unreadable secret file) shows in the session's status.
			d.log.Error("xmpp service not started", "session", name, "err", err)
			continue
		}
		p := &sessionPart{part: d.start(func(ctx context.Context) { sess.Run(ctx) }), session: sess, service: wanted[name]}
		d.mu.Lock()
		d.xmpp[name] = p
		d.mu.Unlock()
	}
}

func (d *Daemon) newSession(cfg config.Config, s config.Service) (*xmppsession.Session, error) {
	secret, err := s.ResolveSecret(cfg.Path)
	if err != nil {
		return nil, err
	}
	policy, err := newPolicy(s)
	if err != nil {
		return nil, err
	}
	backoff := xmppsession.Backoff{Min: cfg.Reconnect.Min(), Max: cfg.Reconnect.Max()}
	log := d.log.With("part", "xmpp", "server", s.Server)
	switch s.Type {
	case config.ServiceComponent:
		domain, err := jid.Parse(s.Domain)
		if err != nil {
			return nil, fmt.Errorf("xmpp service %s: domain: %w", s.Name, err)
		}
		sess := xmppsession.NewComponent(xmppsession.ComponentConfig{Name: s.Name, Server: s.Server, Domain: domain,
			Secret: secret, Backoff: backoff, Logger: log})
		sess.SetHandler(d.withDirectory(d.svc.Handler(sess, policy)))
		return sess, nil
	case config.ServiceClient:
		account, err := jid.Parse(s.JID)
		if err != nil {
			return nil, fmt.Errorf("xmpp service %s: jid: %w", s.Name, err)
		}
		roots, err := s.ResolveCA(cfg.Path)
		if err != nil {
			return nil, err
		}
		sess, err := xmppsession.NewClient(xmppsession.ClientConfig{Name: s.Name, JID: account, Password: secret,
			Server: s.Server, DirectTLS: s.TLS == config.TLSDirect, RootCAs: roots, AllowPlain: s.AllowPlain, Backoff: backoff, Logger: log})
		if err != nil {
			return nil, err
		}
		h := d.svc.Handler(sess, policy)
		sess.SetHandler(d.withDirectory(h))
		sess.SetOnOnline(h.OnOnline)
		return sess, nil
	}
	return nil, fmt.Errorf("xmpp service %s: unknown type %q", s.Name, s.Type)
}

// newPolicy builds a service's request policy from its configuration.
func newPolicy(s config.Service) (*admission.Policy, error) {
	allow, err := jinglenodes.ParseJIDList(s.Allow)
	if err != nil {
		return nil, fmt.Errorf("xmpp service %s: allow: %w", s.Name, err)
	}
	deny, err := jinglenodes.ParseJIDList(s.Deny)
	if err != nil {
		return nil, fmt.Errorf("xmpp service %s: deny: %w", s.Name, err)
	}
	p := &admission.Policy{Allow: allow, Deny: deny}
	if s.Policy == config.PolicyRoster {
		p.RosterOnly, p.Roster = true, admission.NewRoster()
	}
	return p, nil
}

func (d *Daemon) sessionStatus(name string) (xmppsession.Status, bool) {
	d.mu.Lock()
	p := d.xmpp[name]
	d.mu.Unlock()
	if p == nil {
		return xmppsession.Status{Name: name, State: xmppsession.StateStopped}, false
	}
	return p.session.Status(), true
}

// sessions returns the running sessions in configuration order.
func (d *Daemon) sessions() []*xmppsession.Session {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []*xmppsession.Session
	for _, name := range d.order {
		if p := d.xmpp[name]; p != nil {
			out = append(out, p.session)
		}
	}
	return out
}

// onlineQuerier is a session the tracker may send its queries through:
// the first one online, or nil.
func (d *Daemon) onlineQuerier() tracker.Querier {
	for _, s := range d.sessions() {
		if s.Status().State == xmppsession.StateOnline {
			return s
		}
	}
	return nil
}

// sessionAddrs are the relay's own addresses, which the tracker does not
// list as other relays.
func (d *Daemon) sessionAddrs() []jid.JID {
	var out []jid.JID
	for _, s := range d.sessions() {
		out = append(out, s.Addr())
	}
	return out
}
