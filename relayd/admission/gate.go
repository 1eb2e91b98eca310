// Package admission decides whether the relay takes a new channel, and
// reserves it in the same step.
//
// A Gate holds everything that admits or refuses a request: the service's
// request policy (allow, deny, roster), whether the relay drains for
// shutdown, the data quotas, limits.max_channels, and what one requester
// and one domain may take. Reserve checks all of them and counts the
// request under one lock, so two concurrent requests can never both take
// the last slot of any limit. The channel itself is opened afterwards by
// the data plane: the Ticket Reserve returns is committed once it is, and
// cancelled when it fails, giving the reservation back.
//
// The Gate knows nothing of the protocol that asked: Jingle Nodes channel
// requests reserve through it today, and a TURN allocation reserves
// through it the same way (a requester, the policy of the service it came
// in on). Each protocol maps a *Refusal to its own error once.
//
// Bandwidth is not admission: the relay-wide bandwidth cap and the
// per-channel kbps limit bound packets, not requests, and stay in the data
// plane.
package admission

import (
	"fmt"
	"sync"
	"time"

	"mellium.im/xmpp/jid"
)

// Limits bound what the relay, one requester (a bare JID) and one domain
// (see domainOf) may take. 0 = no limit.
type Limits struct {
	// MaxChannels is the most live channels of the whole relay.
	MaxChannels int
	// RequesterChannels is the most live channels one requester holds;
	// RequesterRequestsPerMinute the channel requests it may make a minute
	// (with a burst of the same size).
	RequesterChannels          int
	RequesterRequestsPerMinute int
	// DomainChannels is the most live channels the requesters of one
	// domain hold together.
	DomainChannels int
}

// Config is what a Gate asks of the rest of the relay. Each function is
// called under the Gate's lock and must not call back into it.
type Config struct {
	// Draining reports whether the relay drains for shutdown (nil = never).
	Draining func() bool
	// Quota returns why new channels are refused for a used-up data quota,
	// or nil (nil = no quotas): the usage meter's Exhausted.
	Quota func() error
	// Now is the clock of the request rates (nil = time.Now).
	Now func() time.Time
}

// Request is one request for a channel.
type Request struct {
	// Requester is who asked: the sender of the request.
	Requester jid.JID
	// Policy is the request policy of the service the request came in on
	// (nil = public).
	Policy *Policy
}

// Gate admits and reserves channels. Its methods are safe for concurrent
// use.
type Gate struct {
	cfg Config

	mu         sync.Mutex
	limits     Limits
	held       int // channels reserved or committed, for MaxChannels
	requesters *requesters
}

// New returns a Gate with no limits.
func New(cfg Config) *Gate {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Gate{cfg: cfg, requesters: newRequesters()}
}

// SetLimits changes the limits; channels already held are kept even when
// the new limits are lower (requests are refused until they end).
func (g *Gate) SetLimits(l Limits) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.limits = l
	g.requesters.setLimits(l)
}

// Reserve admits req and reserves a channel for it, or returns a
// *Refusal. The checks run in this order, the first failing one giving
// the refusal: the policy, the relay-wide state (draining, quota,
// max_channels), then the requester's request rate, its channels and its
// domain's. A refused request holds nothing; an admitted one holds its
// reservation until the ticket is cancelled or released.
func (g *Gate) Reserve(req Request) (*Ticket, error) {
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if r := g.beforeRequesterLocked(req); r != nil {
		return nil, r
	}
	key, domain := req.Requester.Bare().String(), domainOf(req.Requester)
	if r := g.requesters.reserve(key, domain, now); r != nil {
		return nil, r
	}
	g.held++
	return &Ticket{gate: g, key: key, domain: domain}, nil
}

// Check returns the *Refusal Reserve would return for req now, or nil,
// without reserving anything or counting the request against the
// requester's rate: for a protocol that must tell a refusal apart before
// it reserves (TURN answers 486 to a quota refusal, 508 to a failure
// after). Another request may take the last slot between Check and
// Reserve; Reserve stays the one that decides.
func (g *Gate) Check(req Request) error {
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if r := g.beforeRequesterLocked(req); r != nil {
		return r
	}
	if r := g.requesters.check(req.Requester.Bare().String(), domainOf(req.Requester), now); r != nil {
		return r
	}
	return nil
}

// beforeRequesterLocked runs the checks before the requester's own: the
// policy, then the relay-wide state.
func (g *Gate) beforeRequesterLocked(req Request) *Refusal {
	if ok, why := req.Policy.Permit(req.Requester); !ok {
		return refuse(Denied, why)
	}
	return g.relayWideLocked()
}

// RelayWide returns the *Refusal every request would get now for the
// relay's own state (draining, a used-up quota, max_channels reached), or
// nil: what a listing of available relays needs to know.
func (g *Gate) RelayWide() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if r := g.relayWideLocked(); r != nil {
		return r
	}
	return nil
}

func (g *Gate) relayWideLocked() *Refusal {
	if g.cfg.Draining != nil && g.cfg.Draining() {
		return refuse(Draining, "relay is shutting down")
	}
	if g.cfg.Quota != nil {
		if err := g.cfg.Quota(); err != nil {
			return refuse(QuotaExhausted, err.Error())
		}
	}
	if n := g.limits.MaxChannels; n > 0 && g.held >= n {
		return refuse(RelayFull, fmt.Sprintf("the relay carries its maximum of %d calls", n))
	}
	return nil
}

// Held is how many channels are reserved or committed now.
func (g *Gate) Held() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// giveBackLocked undoes t's reservation, once.
func (g *Gate) giveBackLocked(t *Ticket) {
	if t.state == returned {
		return
	}
	t.state = returned
	g.held--
	g.requesters.release(t.key, t.domain)
}
