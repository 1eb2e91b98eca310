package admission

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/time/rate"
	"mellium.im/xmpp/jid"
)

// maxTrackedJIDs bounds the requester table. Entries holding no channel
// are dropped first, least recently seen first; a flood from many JIDs
// therefore costs at most this many small entries.
const maxTrackedJIDs = 20000

// requesters is the requester table behind the per-requester limits, and
// the count of live channels by domain. It has no lock of its own: the
// Gate's lock guards it, so its checks and counts are one step with the
// relay-wide ones.
type requesters struct {
	limits Limits
	jids   map[string]*jidState // by bare JID
	// domains counts the channels reserved by each domain's requesters;
	// a domain holding none has no entry, so the map is never larger than
	// the number of live channels.
	domains map[string]int
}

type jidState struct {
	limiter  *rate.Limiter // nil when requests are not limited
	channels int
	seen     time.Time
}

func newRequesters() *requesters {
	return &requesters{jids: make(map[string]*jidState), domains: make(map[string]int)}
}

// domainOf is the domain a requester counts against: the registrable
// domain of its JID's domain, so that a.example.net and b.example.net,
// which one owner can create at will with a wildcard DNS record and
// certificate, share one limit. It is the last two labels, or three under
// a country's common second level (example.co.uk, example.com.au): the
// public suffix list would be exact, but costs 94 KB of a router's flash,
// and grouping too widely (user.github.io under github.io) costs at most
// a shared share. An IP literal counts as itself.
func domainOf(requester jid.JID) string {
	d := strings.TrimSuffix(requester.Domainpart(), ".")
	if strings.HasPrefix(d, "[") {
		return d
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return d
	}
	labels := strings.Split(d, ".")
	n := 2
	if k := len(labels); k >= 3 && len(labels[k-1]) == 2 && countrySecondLevel[labels[k-2]] {
		n = 3
	}
	if len(labels) <= n {
		return d
	}
	return strings.Join(labels[len(labels)-n:], ".")
}

// countrySecondLevel are the second-level labels under which country
// registries hand out domains (co.uk, com.au, ne.jp, org.br, ...).
var countrySecondLevel = map[string]bool{"co": true, "com": true, "net": true, "org": true, "gov": true, "edu": true,
	"ac": true, "or": true, "ne": true, "go": true, "gv": true, "mil": true, "nom": true, "ltd": true, "plc": true}

// setLimits changes the limits; requesters' limiters are rebuilt when the
// request rate changes.
func (p *requesters) setLimits(l Limits) {
	rateChanged := l.RequesterRequestsPerMinute != p.limits.RequesterRequestsPerMinute
	p.limits = l
	if !rateChanged {
		return
	}
	for _, st := range p.jids {
		st.limiter = nil
		if l.RequesterRequestsPerMinute > 0 {
			st.limiter = newLimiter(l.RequesterRequestsPerMinute)
		}
	}
}

func newLimiter(perMinute int) *rate.Limiter {
	return rate.NewLimiter(rate.Limit(float64(perMinute)/60), perMinute)
}

// reserve counts a channel request from the requester key (a bare JID) of
// domain and, if every limit allows it, reserves a channel for it. A
// refusal's text says which limit. A reservation must be undone with
// release, when the allocation fails or when the channel ends.
func (p *requesters) reserve(key, domain string, now time.Time) *Refusal {
	st := p.entry(key)
	st.seen = now
	if st.limiter != nil && !st.limiter.AllowN(now, 1) {
		return p.rateRefusal(key)
	}
	if r := p.heldRefusal(key, domain, st.channels); r != nil {
		return r
	}
	st.channels++
	p.domains[domain]++
	return nil
}

// check is reserve's verdict, the same refusal in the same order, without
// counting the request against the rate or reserving anything (and
// without adding the requester to the table).
func (p *requesters) check(key, domain string, now time.Time) *Refusal {
	st := p.jids[key]
	if st == nil {
		return p.heldRefusal(key, domain, 0)
	}
	if st.limiter != nil && st.limiter.TokensAt(now) < 1 {
		return p.rateRefusal(key)
	}
	return p.heldRefusal(key, domain, st.channels)
}

func (p *requesters) rateRefusal(key string) *Refusal {
	return refuse(RequesterRate, fmt.Sprintf("too many channel requests from %s: the limit is %d a minute", key, p.limits.RequesterRequestsPerMinute))
}

// heldRefusal refuses key, holding channels, when it or its domain holds
// the most channels allowed.
func (p *requesters) heldRefusal(key, domain string, channels int) *Refusal {
	if n := p.limits.RequesterChannels; n > 0 && channels >= n {
		return refuse(RequesterChannels, fmt.Sprintf("%s already holds %d channels, the most one requester may hold", key, channels))
	}
	if n := p.limits.DomainChannels; n > 0 && p.domains[domain] >= n {
		return refuse(DomainShare, fmt.Sprintf("requesters of %s already hold %d channels, the most one domain may hold", domain, p.domains[domain]))
	}
	return nil
}

// release undoes a reservation: the allocation failed, or the channel
// ended.
func (p *requesters) release(key, domain string) {
	if st := p.jids[key]; st != nil {
		st.channels = max(0, st.channels-1)
	}
	if n := p.domains[domain]; n > 1 {
		p.domains[domain] = n - 1
	} else {
		delete(p.domains, domain)
	}
}

// entry is key's state, created (making room first) if it has none.
func (p *requesters) entry(key string) *jidState {
	st := p.jids[key]
	if st == nil {
		p.makeRoom()
		st = &jidState{}
		if p.limits.RequesterRequestsPerMinute > 0 {
			st.limiter = newLimiter(p.limits.RequesterRequestsPerMinute)
		}
		p.jids[key] = st
	}
	return st
}

// makeRoom drops entries that hold no channel, oldest first, until the
// table is at three quarters of its bound (so the sweep is rare).
func (p *requesters) makeRoom() {
	if len(p.jids) < maxTrackedJIDs {
		return
	}
	type aged struct {
		key  string
		seen time.Time
	}
	var idle []aged
	for k, st := range p.jids {
		if st.channels == 0 {
			idle = append(idle, aged{k, st.seen})
		}
	}
	excess := len(p.jids) - maxTrackedJIDs*3/4
	if excess > len(idle) {
		excess = len(idle)
	}
	// A full sort is fine: the sweep is rare and the table bounded.
	slices.SortFunc(idle, func(a, b aged) int { return a.seen.Compare(b.seen) })
	for _, a := range idle[:excess] {
		delete(p.jids, a.key)
	}
}

// tracked is how many requesters and domains are in the tables (for
// tests).
func (p *requesters) tracked() (jids, domains int) {
	return len(p.jids), len(p.domains)
}
