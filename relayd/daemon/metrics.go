package daemon

import (
	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/metrics"
)

// MetricsSources are the daemon's live counters for the Prometheus
// collector: read at scrape time, nothing is counted twice.
func (d *Daemon) MetricsSources() metrics.Sources {
	return metrics.Sources{
		DataPlane: func() metrics.DataPlane {
			tot := d.dp.Totals()
			sp := d.dp.Sprayers()
			t := traffic(tot.Stats)
			return metrics.DataPlane{
				ActiveChannels: tot.Active, Capacity: tot.Capacity,
				PacketsLocalToRemote: t.PacketsLocalToRemote, PacketsRemoteToLocal: t.PacketsRemoteToLocal,
				BytesLocalToRemote: t.BytesLocalToRemote, BytesRemoteToLocal: t.BytesRemoteToLocal,
				Dropped: t.Dropped, Relatched: t.Relatched, Segmented: tot.Segmented,
				SprayersBlocked: sp.Blocked, SprayersBlockedTotal: sp.BlockedTotal,
			}
		},
		Sessions: func() []metrics.Session {
			var out []metrics.Session
			for _, s := range d.sessions() {
				st := s.Status()
				out = append(out, metrics.Session{Name: st.Name, State: string(st.State), Connects: st.Connects})
			}
			return out
		},
		STUN: func() metrics.STUNStats {
			srv := d.stunSrv.Load()
			if srv == nil {
				return metrics.STUNStats{}
			}
			st := srv.Stats()
			return metrics.STUNStats{Requests: st.Requests, Responses: st.Responses, Dropped: st.DroppedBy()}
		},
		FastPath: func() metrics.FastPath {
			fp := d.dp.FastPath()
			tot := d.dp.Totals()
			return metrics.FastPath{Active: fp.Active, OffloadedLegs: fp.OffloadedNow, Offloads: fp.Offloads,
				NotOffloaded:         fp.NotOffloaded,
				PacketsLocalToRemote: tot.Stats.Offloaded[channel.LocalToRemote], PacketsRemoteToLocal: tot.Stats.Offloaded[channel.RemoteToLocal]}
		},
		Usage: func() metrics.Usage {
			c, q := d.meter.Counts(), d.meter.Quota()
			return metrics.Usage{DayBytes: c.DayBytes, MonthBytes: c.MonthBytes,
				DailyQuotaBytes: q.DailyBytes, MonthlyQuotaBytes: q.MonthlyBytes, Exhausted: d.meter.Exhausted() != nil}
		},
		Requests: func() metrics.Requests {
			st := d.svc.Stats()
			return metrics.Requests{Granted: st.Granted, Refused: st.Refused}
		},
		CallsServed: d.callsServed,
		TURN: func() (metrics.TURN, bool) {
			srv := d.turnSrv.Load()
			if srv == nil {
				return metrics.TURN{}, false
			}
			st := srv.Stats()
			return metrics.TURN{AllocationsLive: st.AllocationsLive, AllocationsTotal: st.AllocationsTotal,
				Refused: st.Refused, BytesToPeers: st.BytesToPeers, BytesFromPeers: st.BytesFromPeers}, true
		},
		Reachability: func() metrics.Reachability {
			r := d.reachabilityReport()
			if r == nil {
				return metrics.Reachability{}
			}
			m := metrics.Reachability{RelayPorts: string(r.RelayPorts), STUN: string(r.STUN)}
			if r.CheckedAt != nil {
				m.CheckedAt = r.CheckedAt.Unix()
			}
			return m
		},
		PortMapping: func() (metrics.PortMapping, bool) {
			m := d.mapper.Load()
			if m == nil {
				return metrics.PortMapping{}, false
			}
			st := m.State()
			return metrics.PortMapping{Protocol: string(st.Protocol), Ports: len(st.Mappings)}, true
		},
	}
}
