package turn

import (
	"slices"
	"sync/atomic"
)

// Refusal reasons counted by Stats.
const (
	RefusedAuth       = "auth"        // a malformed, expired or wrongly signed credential, or a wrong password
	RefusedAdmission  = "admission"   // the admission gate refused the requester
	RefusedPool       = "pool"        // no relay port could be opened (pool exhausted, draining)
	RefusedPeer       = "peer"        // a permission, channel binding or datagram for a forbidden peer
	RefusedRateLimit  = "rate_limit"  // an unauthenticated request over its source's rate
	RefusedNoAddress  = "no_address"  // the relay's public address is not known yet
	RefusedAddrFamily = "addr_family" // a relayed address of a family the relay does not listen on
	RefusedTLSSource  = "tls_source"  // a TLS connection over its source address's bound
	// An answer without MESSAGE-INTEGRITY its source's answer budget could
	// not pay (amplification.go).
	RefusedAmplification = "amplification"
)

// RefusalReasons lists every reason Stats counts, for metrics.
var RefusalReasons = []string{RefusedAuth, RefusedAdmission, RefusedPool, RefusedPeer, RefusedRateLimit, RefusedNoAddress, RefusedAddrFamily, RefusedTLSSource,
	RefusedAmplification}

// Stats are the server's counters since it started.
type Stats struct {
	AllocationsLive  int    `json:"allocations_live"`
	AllocationsTotal uint64 `json:"allocations_total"`
	// AllocationsServed counts the allocations that relayed at least one
	// datagram to a peer and one from a peer: they carried a call.
	AllocationsServed uint64            `json:"allocations_served"`
	Refused           map[string]uint64 `json:"refused"` // by reason (RefusalReasons)
	// Bytes relayed: payload sent to peers, and received from them.
	BytesToPeers   uint64 `json:"bytes_to_peers"`
	BytesFromPeers uint64 `json:"bytes_from_peers"`
}

// counters are the live counters behind Stats.
type counters struct {
	live, total        atomic.Int64
	toPeers, fromPeers atomic.Uint64
	served             atomic.Uint64
	refused            []atomic.Uint64 // by index in RefusalReasons
}

func newCounters() *counters { return &counters{refused: make([]atomic.Uint64, len(RefusalReasons))} }

// refuse counts one refusal; reason is one of RefusalReasons.
func (c *counters) refuse(reason string) {
	if i := slices.Index(RefusalReasons, reason); i >= 0 {
		c.refused[i].Add(1)
	}
}

func (c *counters) snapshot() Stats {
	refused := make(map[string]uint64, len(RefusalReasons))
	for i, r := range RefusalReasons {
		refused[r] = c.refused[i].Load()
	}
	return Stats{AllocationsLive: int(c.live.Load()), AllocationsTotal: uint64(c.total.Load()), AllocationsServed: c.served.Load(), Refused: refused,
		BytesToPeers: c.toPeers.Load(), BytesFromPeers: c.fromPeers.Load()}
}
