package metrics

import "github.com/jnrelay/jnrelay/relayd/turn"

// TURN is a snapshot of the built-in TURN server's counters (turn.Stats).
type TURN struct {
	AllocationsLive  int    // allocations open now
	AllocationsTotal uint64 // allocations opened since the server started
	// Refused counts refusals by turn.RefusalReasons name (auth,
	// admission, pool, ...). Other keys are summed into reason="other".
	Refused map[string]uint64
	// Payload relayed: sent to peers (the requester's side is local, as
	// for channels) and received from them.
	BytesToPeers, BytesFromPeers uint64
}

// turnRefusalReasons are the turn package's own, listed there once.
var turnRefusalReasons = turn.RefusalReasons

// turnFamilies are the relayd_turn_* families.
type turnFamilies struct {
	live, total, refused, bytes family
}

func newTURNFamilies() turnFamilies {
	return turnFamilies{
		live: family{name: "relayd_turn_allocations", typ: gaugeType,
			help: "TURN allocations open now on the built-in TURN server; each holds a relay port of the channels' range."},
		total: family{name: "relayd_turn_allocations_total", typ: counterType,
			help: "TURN allocations opened since the built-in TURN server started."},
		refused: family{name: "relayd_turn_refusals_total", typ: counterType, labels: []string{"reason"},
			help: "Requests, datagrams and peers the built-in TURN server refused, by reason (pool: no relay port free; admission: the requester's or the relay's limits)."},
		bytes: family{name: "relayd_turn_relayed_bytes_total", typ: counterType, labels: []string{"direction"},
			help: "Payload bytes the built-in TURN server relayed, by direction (local is the TURN client, remote its peers)."},
	}
}

// write writes the TURN families from one snapshot.
func (f *turnFamilies) write(w *textWriter, t TURN) {
	w.uint(&f.live, uint64(max(t.AllocationsLive, 0)))
	w.uint(&f.total, t.AllocationsTotal)
	byLabel(w, &f.refused, t.Refused, turnRefusalReasons)
	w.uint(&f.bytes, t.BytesToPeers, directions[0])
	w.uint(&f.bytes, t.BytesFromPeers, directions[1])
}
