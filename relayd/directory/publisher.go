package directory

import (
	"context"
	"encoding/xml"
	"errors"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// Requester sends IQs through an online XMPP session.
type Requester interface {
	Query(ctx context.Context, to jid.JID, payload xml.TokenReader, v any) error
	Set(ctx context.Context, to jid.JID, payload xml.TokenReader, v any) error
	Addr() jid.JID
}

// Bounds of publishing.
const (
	// minRepublish spaces publications caused by a change (free
	// capacity moves with every call).
	minRepublish   = time.Minute
	requestTimeout = 10 * time.Second
	checkEvery     = 5 * time.Second
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	Nodes   []Node
	Refresh time.Duration
	// Session returns the online session to publish to n through, or
	// nil. The item there is about that session's address.
	Session func(n Node) Requester
	// Self describes the relay now (JID and Updated are filled in); false
	// means it is not to be listed now (draining, full quota).
	Self   func() (Item, bool)
	Logger *slog.Logger
	// CheckEvery is how often Self is compared with what was published
	// (0 = 5 s).
	CheckEvery time.Duration
}

// published is what one node holds from this relay.
type published struct {
	item Item
	at   time.Time
}

// Publisher keeps the relay's item in its directories.
type Publisher struct {
	cfg PublisherConfig
	log *slog.Logger
	// op holds a publication round or a withdrawal: a withdrawal never
	// runs beside a round that would publish again after it.
	op sync.Mutex

	mu        sync.Mutex
	nodes     map[string]published
	withdrawn bool
	// unlisted is set while the relay is not to be listed (Self said
	// so at the last round: draining, quota used up).
	unlisted bool
	// failed is the last publish error per node: a node that keeps
	// failing is logged once a kind of failure, not every 5 s.
	failed map[string]string
	// tried is when the relay last tried to publish to each node.
	tried map[string]time.Time
}

// NewPublisher returns a Publisher; Run publishes.
func NewPublisher(cfg PublisherConfig) *Publisher {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.CheckEvery <= 0 {
		cfg.CheckEvery = checkEvery
	}
	return &Publisher{cfg: cfg, log: cfg.Logger, nodes: map[string]published{}, failed: map[string]string{},
		tried: map[string]time.Time{}}
}

// Run publishes whenever the item is due (first online, every Refresh,
// on a change at most every minute) until ctx ends or Withdraw is called.
func (p *Publisher) Run(ctx context.Context) {
	tick := time.NewTicker(p.cfg.CheckEvery)
	defer tick.Stop()
	for {
		p.step(ctx)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// same reports whether two items say the same, their time aside.
func same(a, b Item) bool {
	a.Updated, b.Updated = time.Time{}, time.Time{}
	return reflect.DeepEqual(a, b)
}

func (p *Publisher) step(ctx context.Context) {
	p.op.Lock()
	defer p.op.Unlock()
	p.mu.Lock()
	withdrawn := p.withdrawn
	p.mu.Unlock()
	if withdrawn {
		return
	}
	self, listed := p.cfg.Self()
	now := time.Now()
	p.mu.Lock()
	p.unlisted = !listed
	p.mu.Unlock()
	for _, n := range p.cfg.Nodes {
		s := p.cfg.Session(n)
		if s == nil {
			continue
		}
		it := self
		it.JID, it.Policy, it.Status = s.Addr(), "public", StatusOK
		it.Updated = now.Truncate(time.Second)
		p.mu.Lock()
		prev, ok := p.nodes[n.String()]
		p.mu.Unlock()
		if !listed {
			if ok {
				p.retract(ctx, s, n, prev.item)
			}
			continue
		}
		if ok && prev.item.JID.Equal(it.JID) && (same(prev.item, it) || now.Sub(prev.at) < minRepublish) && now.Sub(prev.at) < p.cfg.Refresh {
			continue
		}
		if ok && !prev.item.JID.Equal(it.JID) {
			// A new address (a client session's new resource): the old
			// item goes.
			p.retract(ctx, s, n, prev.item)
		}
		err := p.publish(ctx, s, n, it)
		p.mu.Lock()
		p.tried[n.String()] = now
		p.mu.Unlock()
		if err != nil {
			p.mu.Lock()
			repeated := p.failed[n.String()] == err.Error()
			p.failed[n.String()] = err.Error()
			p.mu.Unlock()
			level := slog.LevelWarn
			if repeated {
				level = slog.LevelDebug
			}
			p.log.Log(ctx, level, "directory: publish failed", "node", n.String(), "err", err)
			continue
		}
		p.mu.Lock()
		delete(p.failed, n.String())
		_, again := p.nodes[n.String()]
		p.nodes[n.String()] = published{item: it, at: now}
		p.mu.Unlock()
		if !again {
			p.log.Info("directory: published", "node", n.String(), "jid", it.JID.String(), "free", it.Free)
		}
	}
}

// publish publishes it on n, creating the node first when the service
// says it does not exist (and lets this account create it).
func (p *Publisher) publish(ctx context.Context, s Requester, n Node, it Item) error {
	var ignored struct{ XMLName xml.Name }
	err := set(ctx, s, n.Service, publishPayload(n.Node, it), &ignored)
	var se stanza.Error
	if !errors.As(err, &se) || se.Condition != stanza.ItemNotFound {
		return err
	}
	if err := CreateNode(ctx, s, n); err != nil {
		return errors.Join(errors.New("the node does not exist and could not be created: the provider creates it (docs/directory.md)"), err)
	}
	p.log.Info("directory: node created", "node", n.String())
	return set(ctx, s, n.Service, publishPayload(n.Node, it), &ignored)
}

// CreateNode creates the directory node n as docs/directory.md says
// (open publish model, open access, persistent items, as many as the
// service allows, each stamped with its publisher).
func CreateNode(ctx context.Context, s Requester, n Node) error {
	var ignored struct{ XMLName xml.Name }
	return set(ctx, s, n.Service, createPayload(n.Node), &ignored)
}

// CreateNodeXML is the payload CreateNode sends, as text (for tools
// and tests that create the node with another client).
func CreateNodeXML(node string) string {
	var b strings.Builder
	e := xml.NewEncoder(&b)
	if _, err := xmlstream.Copy(e, createPayload(node)); err != nil || e.Flush() != nil {
		return ""
	}
	return b.String()
}

func set(ctx context.Context, s Requester, to jid.JID, payload xml.TokenReader, v any) error {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	return s.Set(ctx, to, payload, v)
}

// retract removes the item from n; where the service lets this relay
// publish but not retract (an open publish model grants no retraction on
// Prosody), it publishes the item once more with StatusStopped, which
// readers drop.
func (p *Publisher) retract(ctx context.Context, s Requester, n Node, it Item) {
	var ignored struct{ XMLName xml.Name }
	err := set(ctx, s, n.Service, retractPayload(n.Node, it.JID.String()), &ignored)
	if err != nil {
		it.Status, it.Updated = StatusStopped, time.Now().Truncate(time.Second)
		if perr := set(ctx, s, n.Service, publishPayload(n.Node, it), &ignored); perr != nil {
			p.log.Warn("directory: item neither retracted nor marked stopped", "node", n.String(), "err", errors.Join(err, perr))
			return
		}
		p.log.Info("directory: item marked stopped (retraction refused)", "node", n.String(), "jid", it.JID.String(), "retract_err", err)
	} else {
		p.log.Info("directory: item retracted", "node", n.String(), "jid", it.JID.String())
	}
	p.mu.Lock()
	delete(p.nodes, n.String())
	p.mu.Unlock()
}

// Withdraw takes the item out of every directory (a clean stop) and
// keeps Run from publishing again. It needs the session still online.
func (p *Publisher) Withdraw(ctx context.Context) {
	p.op.Lock()
	defer p.op.Unlock()
	p.mu.Lock()
	p.withdrawn = true
	var held []Node
	for _, n := range p.cfg.Nodes {
		if _, ok := p.nodes[n.String()]; ok {
			held = append(held, n)
		}
	}
	p.mu.Unlock()
	for _, n := range held {
		s := p.cfg.Session(n)
		if s == nil {
			continue
		}
		p.mu.Lock()
		pub := p.nodes[n.String()]
		p.mu.Unlock()
		p.retract(ctx, s, n, pub.item)
	}
}
