package directory

import (
	"context"
	"slices"
	"strings"
	"time"

	"mellium.im/xmpp/jid"
)

// maxProbesPerStep bounds the probes of one step (every 5 s): a
// directory of many relays is not probed at once.
const maxProbesPerStep = 2

// probeRetry is how soon a relay of the share that failed its probe is
// probed again (at most Refresh): a failure of a moment (the relay's
// session reconnecting) keeps it unlisted no longer than this.
const probeRetry = time.Minute

// goodReachability are the reachability values a relay publishes when
// the Internet reaches its public address (docs/directory.md).
var goodReachability = map[string]bool{"configured": true, "public": true, "port_mapped": true}

// probedOK reports whether this reader's last probe of k succeeded.
func (k *known) probedOK() bool { return !k.probedAt.IsZero() && k.probeErr == "" }

// probeFailed reports whether this reader's last probe of k failed.
func (k *known) probeFailed() bool { return !k.probedAt.IsZero() && k.probeErr != "" }

// trusted reports whether k may be listed as far as the trust rule goes:
// verified, or unverified with a probe that passed.
func (k *known) trusted() bool {
	return k.trust == Verified || k.trust == Unverified && k.probedOK()
}

// healthy reports whether k's health is known good: it granted this
// reader's probe, or (not probed by this reader) it says the Internet
// reaches its address.
func (k *known) healthy() bool {
	if !k.probedAt.IsZero() {
		return k.probeErr == ""
	}
	return goodReachability[k.item.Reachability]
}

// identity is the address this reader weighs its share under: the
// smallest of its own addresses (a component has one; an account with
// sessions on several servers is known to the others by the address of
// its item, and at worst a relay gets one prober more).
func (r *Reader) identity() string {
	var id string
	for _, a := range r.cfg.Self() {
		if s := a.String(); id == "" || s < id {
			id = s
		}
	}
	return id
}

// trackers lists the trackers of the directories this reader believes:
// trusted items that say <tracker/>, sorted. r.mu is held.
func (r *Reader) trackers() []string {
	var out []string
	for addr, k := range r.relays {
		if k.item.Tracker && k.trusted() {
			out = append(out, addr)
		}
	}
	slices.Sort(out)
	return out
}

// shareView is what this reader's share depends on: its identity and the
// trackers it knows. gen changes with them; each relay's membership is
// weighed again only then (weighing costs one hash per tracker).
type shareView struct {
	self     string
	trackers []string
	gen      uint64
}

// refreshView brings r.view up to date with self and the relays known.
// r.mu is held.
func (r *Reader) refreshView(self string) {
	trackers := r.trackers()
	if r.view.gen != 0 && self == r.view.self && slices.Equal(trackers, r.view.trackers) {
		return
	}
	r.view = shareView{self: self, trackers: trackers, gen: r.view.gen + 1}
}

// mine reports whether the relay addr (k) is in this reader's share, as of
// the last refreshView. r.mu is held.
func (r *Reader) mine(addr string, k *known) bool {
	if r.view.self == "" {
		return false
	}
	if k.shareGen != r.view.gen {
		k.inMyShare, k.shareGen = inShare(r.view.self, r.view.trackers, addr, r.cfg.Probers), r.view.gen
	}
	return k.inMyShare
}

// dueProbes picks at most maxProbesPerStep relays to probe now:
// unverified relays never probed first (they are not listed before), then
// relays of this reader's share not probed for a refresh period (a
// minute after a failure), the longest unprobed first.
func (r *Reader) dueProbes() []jid.JID {
	self := r.identity()
	now := r.cfg.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	r.refreshView(self)
	type due struct {
		k     *known
		first bool
	}
	var todo []due
	for addr, k := range r.relays {
		switch {
		case k.trust == Unverified && k.probedAt.IsZero():
			todo = append(todo, due{k, true})
		case now.Sub(k.probedAt) >= r.probeEvery(k) && r.mine(addr, k):
			todo = append(todo, due{k, false})
		}
	}
	slices.SortFunc(todo, func(a, b due) int {
		if a.first != b.first {
			if a.first {
				return -1
			}
			return 1
		}
		if c := a.k.probedAt.Compare(b.k.probedAt); c != 0 {
			return c
		}
		return strings.Compare(a.k.item.JID.String(), b.k.item.JID.String())
	})
	var out []jid.JID
	for _, d := range todo[:min(len(todo), maxProbesPerStep)] {
		out = append(out, d.k.item.JID)
	}
	return out
}

// probeEvery is how long after its last probe k is probed again.
func (r *Reader) probeEvery(k *known) time.Duration {
	if k.probeFailed() {
		return min(probeRetry, r.cfg.Refresh)
	}
	return r.cfg.Refresh
}

// probe asks the relays due for a channel, through s. An unverified relay
// that fails is dropped (the trust rule); a verified one stays, unlisted
// until a later probe passes.
func (r *Reader) probe(ctx context.Context, s Requester) {
	if r.cfg.Probe == nil {
		return
	}
	for _, a := range r.dueProbes() {
		pctx, cancel := context.WithTimeout(ctx, requestTimeout)
		err := r.cfg.Probe(pctx, s, a)
		cancel()
		r.mu.Lock()
		k := r.relays[a.String()]
		if k == nil {
			r.mu.Unlock()
			continue
		}
		wasOK := k.probedOK()
		k.probedAt, k.probeErr = r.cfg.Now(), ""
		if err != nil {
			k.probeErr = err.Error()
			if k.trust == Unverified {
				delete(r.relays, a.String())
			}
		}
		r.mu.Unlock()
		switch {
		case err != nil:
			r.log.Info("directory: relay failed its probe", "relay", a.String(), "trust", k.trust.String(), "err", err)
		case !wasOK:
			r.log.Info("directory: relay probed", "relay", a.String(), "trust", k.trust.String())
		}
	}
}

// listable reports whether k may be listed now: trusted, running,
// granting Jingle Nodes channels with room, fresh, and not failing this
// reader's probe. r.mu is held.
func (k *known) listable(stale time.Time) bool {
	it := k.item
	return k.trusted() && !k.probeFailed() && it.JingleNodes && it.Free > 0 && it.Status == StatusOK && !it.Updated.Before(stale)
}

// Near is where the reader is (directory.country and .region): relays
// there rank before the others of the same health.
type Near struct{ Country, Region string }

// distance is 0 for a relay of the reader's country and region, 1 of its
// country, 2 otherwise (or when the reader set no country). Regions are
// free text, compared without case.
func (n Near) distance(it Item) int {
	switch {
	case n.Country == "" || it.Country != n.Country:
		return 2
	case n.Region != "" && strings.EqualFold(it.Region, n.Region):
		return 0
	}
	return 1
}

// Listed is the ranked relays to list, at most max: those listable,
// healthy first (they granted this reader's probe, or say the Internet
// reaches them), then the nearest (same country and region, then same
// country), then by free channels, most first.
func (r *Reader) Listed(near Near, max int) []Item {
	stale := r.cfg.Now().Add(-3 * r.cfg.Refresh)
	type ranked struct {
		it      Item
		healthy bool
	}
	r.mu.Lock()
	var out []ranked
	for _, k := range r.relays {
		if k.listable(stale) {
			out = append(out, ranked{k.item, k.healthy()})
		}
	}
	r.mu.Unlock()
	first := func(a, b bool) int {
		switch {
		case a == b:
			return 0
		case a:
			return -1
		}
		return 1
	}
	slices.SortFunc(out, func(a, b ranked) int {
		if c := first(a.healthy, b.healthy); c != 0 {
			return c
		}
		if c := near.distance(a.it) - near.distance(b.it); c != 0 {
			return c
		}
		if c := b.it.Free - a.it.Free; c != 0 {
			return c
		}
		return strings.Compare(a.it.JID.String(), b.it.JID.String())
	})
	items := make([]Item, 0, min(len(out), max))
	for _, x := range out[:min(len(out), max)] {
		items = append(items, x.it)
	}
	return items
}
