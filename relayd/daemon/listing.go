package daemon

import (
	"strings"
	"time"

	"github.com/jnrelay/jnrelay/relayd/turn"
)

// Kinds of the entries of the live list (GET /v1/channels).
const (
	KindChannel = "channel" // a Jingle Nodes channel (ChannelStatus)
	KindTURN    = "turn"    // a TURN allocation (TURNAllocationStatus)
)

// TURNAllocationStatus is one live TURN allocation in the live list.
type TURNAllocationStatus struct {
	Kind string `json:"kind"`
	turn.Allocation
	AgeSeconds int64 `json:"age_seconds"`
}

// TURNAllocations lists the built-in TURN server's live allocations
// (none while it is off).
func (d *Daemon) TURNAllocations() []TURNAllocationStatus {
	srv := d.turnSrv.Load()
	if srv == nil {
		return nil
	}
	var out []TURNAllocationStatus
	for _, a := range srv.Allocations() {
		out = append(out, TURNAllocationStatus{Kind: KindTURN, Allocation: a, AgeSeconds: int64(time.Since(a.Created).Seconds())})
	}
	return out
}

// LiveList is what GET /v1/channels serves: the live channels, then the
// live TURN allocations, each entry with its kind. It stays one JSON
// array of objects with an id each, as it was before allocations were
// listed: a reader of channels skips the entries of another kind.
func (d *Daemon) LiveList() []any {
	var out []any
	for _, c := range d.Channels() {
		out = append(out, c)
	}
	for _, a := range d.TURNAllocations() {
		out = append(out, a)
	}
	return out
}

// KillChannel ends a channel or a TURN allocation now (a channel's
// requester gets a killed event; a TURN client's next Refresh fails).
func (d *Daemon) KillChannel(id string) bool {
	if strings.HasPrefix(id, turn.AllocationIDPrefix) {
		srv := d.turnSrv.Load()
		return srv != nil && srv.Kill(id)
	}
	return d.dp.Kill(id)
}
