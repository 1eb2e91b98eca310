package channel

import (
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// shared is what every channel of a Manager consults while it relays:
// the relay-wide rules (peer rule, sprayer guard, bandwidth cap), the
// fast path and the port table. The Manager owns it and changes it; a
// channel reaches it through Channel.sh, never through the Manager. A
// channel outside a Manager (nil sh) relays by its own rules only.
type shared struct {
	log    *slog.Logger
	listen netip.Addr // the relay ports' address (unspecified = all)
	// openers are the ways to open the fast path's table, tried in
	// order (fastpath_open.go).
	openers []tableOpener

	// ports maps a port to its side while a channel holds it; workers
	// look events up here.
	ports *portTable
	// foreign holds the relay ports handed to another protocol
	// (relayport.go) by port number: no channel side holds them, but
	// they are the relay's own ports all the same.
	foreign sync.Map
	// peers is the rule for sources a port may latch (peers.go), rebuilt
	// when the relay's addresses change; guard watches for sprayers.
	peers atomic.Pointer[peerRule]
	guard *sprayGuard
	total atomic.Pointer[rate.Limiter] // relay-wide bandwidth cap; nil = none
	// fp is the in-kernel fast path, nil when off or unavailable.
	fp      atomic.Pointer[fastPath]
	shields shieldSet // the channels with a port's source filter up
	// shieldOps is the transport's way to raise shields (nil: none).
	shieldOps shieldOps

	// segmented counts datagrams that went out inside another's UDP GSO
	// message: the UDP and IP layers they did not cross on their own.
	segmented atomic.Uint64
	// unrouted counts steered datagrams for ports no channel holds.
	unrouted atomic.Uint64
}

// overTotal reports whether n more bytes would exceed the relay-wide cap
// (without a cap: one atomic load, no clock read).
func (sh *shared) overTotal(n int) bool {
	lim := sh.total.Load()
	return lim != nil && !lim.AllowN(time.Now(), n)
}

// isRelayPort reports whether a channel or another protocol holds port
// now.
func (sh *shared) isRelayPort(port int) bool {
	if sh.ports.lookup(port) != nil {
		return true
	}
	_, ok := sh.foreign.Load(port)
	return ok
}
