package daemon

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/metrics"
	"github.com/jnrelay/jnrelay/relayd/turn"
	"github.com/jnrelay/jnrelay/relayd/usage"
)

// usageSampleEvery is how often the usage meter adds up the relay's
// traffic (quotas take effect within this) and the live calls are noted.
const usageSampleEvery = 2 * time.Second

// UsageHistory is what GET /v1/usage serves: bytes relayed and calls
// served per day (the last 30 days and today) and per month (the last 12
// and this one), and the most calls live at once in each minute of the
// last hour.
type UsageHistory struct {
	usage.History
	LiveMinutes []usage.LiveMinute `json:"live_minutes"`
}

// UsageHistory reports the usage history now.
func (d *Daemon) UsageHistory() UsageHistory {
	return UsageHistory{History: d.meter.History(), LiveMinutes: d.live.Minutes()}
}

// turnTally keeps what stopped built-in TURN servers relayed and served:
// a configuration change restarts the server with fresh counters, and the
// usage meter's totals must only grow.
type turnTally struct {
	mu            sync.Mutex
	bytes, served uint64
}

// retire adds the stopped server's counters to the tally and forgets the
// server, in one step so that no sample counts them twice or not at all.
func (t *turnTally) retire(srv *atomic.Pointer[turn.Server]) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s := srv.Load(); s != nil {
		st := s.Stats()
		t.bytes += st.BytesToPeers + st.BytesFromPeers
		t.served += st.AllocationsServed
	}
	srv.Store(nil)
}

// totals are the tally plus what the running server (if any) counted.
func (t *turnTally) totals(srv *atomic.Pointer[turn.Server]) usage.Totals {
	t.mu.Lock()
	defer t.mu.Unlock()
	tot := usage.Totals{Bytes: t.bytes, Calls: t.served}
	if s := srv.Load(); s != nil {
		st := s.Stats()
		tot.Bytes += st.BytesToPeers + st.BytesFromPeers
		tot.Calls += st.AllocationsServed
	}
	return tot
}

// callsServed are the calls served since start: the channels' and the
// built-in TURN servers', stopped ones included. Each only grows.
func (d *Daemon) callsServed() metrics.CallsServed {
	return metrics.CallsServed{Channels: d.dp.Totals().Served, TURN: d.turnEnded.totals(&d.turnSrv).Calls}
}

// usageTotals is everything relayed since start, both directions, by
// the channels and the built-in TURN server, and the calls they served:
// channels and allocations that relayed at least one datagram each way.
func (d *Daemon) usageTotals() usage.Totals {
	tot := d.dp.Totals()
	t := d.turnEnded.totals(&d.turnSrv)
	t.Bytes += tot.Stats.Bytes[channel.LocalToRemote] + tot.Stats.Bytes[channel.RemoteToLocal]
	t.Calls += tot.Served
	return t
}

// sampleUsage feeds the usage meter and the live calls' record until the
// daemon stops.
func (d *Daemon) sampleUsage() {
	defer d.wg.Done()
	t := time.NewTicker(usageSampleEvery)
	defer t.Stop()
	d.live.Record(d.liveCalls())
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			d.meter.Sample(d.usageTotals())
			d.live.Record(d.liveCalls())
		}
	}
}
