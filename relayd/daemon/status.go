package daemon

import (
	"net/netip"
	"time"

	"github.com/jnrelay/jnrelay/relayd/channel"
	"github.com/jnrelay/jnrelay/relayd/reachability"
	"github.com/jnrelay/jnrelay/relayd/stun"
	"github.com/jnrelay/jnrelay/relayd/turn"
)

// Status is the daemon's state as the provisioning API and the CLI show it.
type Status struct {
	Version       string `json:"version"`
	UptimeSeconds int64  `json:"uptime_seconds"`
	PublicAddress string `json:"public_address"`
	// PublicAddress6 is the host of the built-in TURN server's IPv6
	// relayed addresses, when the relay serves IPv6 and has one.
	PublicAddress6 string `json:"public_address6,omitempty"`
	// Reachability says who can reach that address: configured, public,
	// behind_nat (the router must forward the relay ports), port_mapped
	// (the router maps them for relayd), private_only
	// (only this network) or none (no address yet).
	Reachability string `json:"reachability"`
	// ReachabilityCheck is the self-test of inbound reachability: whether
	// datagrams nobody asked for reach the relay ports and the STUN port
	// from the Internet, in plain words with what to do next.
	ReachabilityCheck *reachability.Report `json:"reachability_check,omitempty"`
	Sessions          []SessionStatus      `json:"sessions"`
	Channels          ChannelTotals        `json:"channels"`
	Traffic           Traffic              `json:"traffic"`
	Requests          Requests             `json:"requests"`
	Usage             Usage                `json:"usage"`
	Draining          bool                 `json:"draining,omitempty"`
	STUN              *STUNStatus          `json:"stun,omitempty"`
	TURN              *turn.Stats          `json:"turn,omitempty"` // the built-in TURN server, when it runs
	FastPath          FastPathStatus       `json:"fast_path"`
	// Directory is there when directory.publish or directory.subscribe
	// lists a node.
	Directory *DirectoryStatus `json:"directory,omitempty"`
	Sockets   SocketsStatus    `json:"sockets"`
	// PortMapping is what the router maps for relayd (absent when
	// port_mapping is off or public_address is set).
	PortMapping *PortMappingStatus `json:"port_mapping,omitempty"`
}

// Usage is what the relay donated in the current day and month (local
// time, kept across restarts): bytes relayed by the channels and the
// built-in TURN server, and calls served (channels and allocations that
// relayed a datagram each way), against the quotas (0 = none); Refusing
// says why new channels are refused, if a quota is used up.
type Usage struct {
	Day               string `json:"day"`
	DayBytes          uint64 `json:"day_bytes"`
	DayCalls          uint64 `json:"day_calls"`
	Month             string `json:"month"`
	MonthBytes        uint64 `json:"month_bytes"`
	MonthCalls        uint64 `json:"month_calls"`
	DailyQuotaBytes   uint64 `json:"daily_quota_bytes"`
	MonthlyQuotaBytes uint64 `json:"monthly_quota_bytes"`
	Refusing          string `json:"refusing,omitempty"`
}

// SessionStatus is one XMPP service's state.
type SessionStatus struct {
	Name      string    `json:"name"`
	Type      string    `json:"type"`
	State     string    `json:"state"`
	Since     time.Time `json:"since"`
	Address   string    `json:"address"`
	LastError string    `json:"last_error,omitempty"`
	Connects  int       `json:"connects"`
}

// ChannelTotals count channels, and beside them the built-in TURN
// server's live allocations while it runs: each allocation holds a block
// of the same port range, so Active + TURNAllocations is what Capacity
// is shared by.
type ChannelTotals struct {
	Active          int  `json:"active"`
	Capacity        int  `json:"capacity"`
	TURNAllocations *int `json:"turn_allocations,omitempty"` // nil when the built-in TURN server is off
}

// Traffic is what the data plane relayed and dropped since start.
type Traffic struct {
	PacketsLocalToRemote uint64            `json:"packets_local_to_remote"`
	PacketsRemoteToLocal uint64            `json:"packets_remote_to_local"`
	BytesLocalToRemote   uint64            `json:"bytes_local_to_remote"`
	BytesRemoteToLocal   uint64            `json:"bytes_remote_to_local"`
	Dropped              map[string]uint64 `json:"dropped"`
	Relatched            uint64            `json:"relatched"`
}

// Requests count channel requests by outcome.
type Requests struct {
	Granted uint64            `json:"granted"`
	Refused map[string]uint64 `json:"refused"`
}

// STUNStatus are the STUN server's counters.
type STUNStatus struct {
	Requests  uint64            `json:"requests"`
	Responses uint64            `json:"responses"`
	Dropped   map[string]uint64 `json:"dropped"`
}

// ChannelStatus is one live channel.
type ChannelStatus struct {
	Kind        string `json:"kind"` // KindChannel
	ID          string `json:"id"`
	LocalPort   int    `json:"localport"`
	RemotePort  int    `json:"remoteport"`
	AgeSeconds  int64  `json:"age_seconds"`
	IdleSeconds int64  `json:"idle_seconds"`
	LocalPeer   string `json:"local_peer,omitempty"`
	RemotePeer  string `json:"remote_peer,omitempty"`
	MaxKbps     int    `json:"max_kbps,omitempty"`
	// Path says per leg (rtp, rtcp) who forwards it now: "kernel" (the
	// fast path) or "userspace".
	Path map[string]string `json:"path"`
	Traffic
}

func traffic(s channel.Stats) Traffic {
	t := Traffic{
		PacketsLocalToRemote: s.Packets[channel.LocalToRemote], PacketsRemoteToLocal: s.Packets[channel.RemoteToLocal],
		BytesLocalToRemote: s.Bytes[channel.LocalToRemote], BytesRemoteToLocal: s.Bytes[channel.RemoteToLocal],
		Dropped: map[string]uint64{"kernel": s.KernelDrops}, Relatched: s.Relatched,
	}
	for r := range s.Dropped {
		t.Dropped[channel.DropReason(r).String()] = s.Dropped[r]
	}
	return t
}

// Status reports the daemon's state now.
func (d *Daemon) Status() Status {
	tot := d.dp.Totals()
	req := d.svc.Stats()
	st := Status{
		Version: d.version, UptimeSeconds: int64(time.Since(d.started).Seconds()),
		PublicAddress:     addrOrEmpty(d.host.Load().Current()),
		Reachability:      string(d.host.Load().Reachability()),
		ReachabilityCheck: d.reachabilityReport(),
		Channels:          ChannelTotals{Active: tot.Active, Capacity: tot.Capacity},
		Traffic:           traffic(tot.Stats),
		Requests:          Requests{Granted: req.Granted, Refused: req.Refused},
		Draining:          d.dp.Draining(),
		FastPath:          d.fastPathStatus(),
		Directory:         d.directoryStatus(),
		Sockets:           d.socketsStatus(),
		PortMapping:       d.portMappingStatus(),
	}
	if d.dp.ServesFamily("udp6") {
		st.PublicAddress6 = addrOrEmpty(d.publicAddr6())
	}
	uc, q := d.meter.Counts(), d.meter.Quota()
	st.Usage = Usage{Day: uc.Day, DayBytes: uc.DayBytes, DayCalls: uc.DayCalls, Month: uc.Month, MonthBytes: uc.MonthBytes, MonthCalls: uc.MonthCalls,
		DailyQuotaBytes: q.DailyBytes, MonthlyQuotaBytes: q.MonthlyBytes}
	if err := d.meter.Exhausted(); err != nil {
		st.Usage.Refusing = err.Error()
	}
	d.mu.Lock()
	kinds := map[string]string{}
	for _, s := range d.cfg.XMPP {
		kinds[s.Name] = string(s.Type)
	}
	d.mu.Unlock()
	for _, s := range d.sessions() {
		ss := s.Status()
		st.Sessions = append(st.Sessions, SessionStatus{Name: ss.Name, Type: kinds[ss.Name], State: string(ss.State),
			Since: ss.Since, Address: s.Addr().String(), LastError: ss.LastError, Connects: ss.Connects})
	}
	if srv := d.stunSrv.Load(); srv != nil {
		st.STUN = stunStatus(srv.Stats())
	}
	if srv := d.turnSrv.Load(); srv != nil {
		ts := srv.Stats()
		st.TURN = &ts
		st.Channels.TURNAllocations = &ts.AllocationsLive
	}
	return st
}

func stunStatus(s stun.Stats) *STUNStatus {
	return &STUNStatus{Requests: s.Requests, Responses: s.Responses, Dropped: s.DroppedBy()}
}

// Channels lists the live channels.
func (d *Daemon) Channels() []ChannelStatus {
	var out []ChannelStatus
	for _, c := range d.dp.Channels() {
		cs := ChannelStatus{Kind: KindChannel, ID: c.ID, LocalPort: c.LocalPort, RemotePort: c.RemotePort,
			AgeSeconds: int64(c.Age.Seconds()), IdleSeconds: int64(c.Idle.Seconds()), MaxKbps: c.MaxKbps, Traffic: traffic(c.Stats),
			Path: legPaths(c.InKernel)}
		if c.LocalPeer.IsValid() {
			cs.LocalPeer = c.LocalPeer.String()
		}
		if c.RemotePeer.IsValid() {
			cs.RemotePeer = c.RemotePeer.String()
		}
		out = append(out, cs)
	}
	return out
}

// DataPlaneTotals exposes the data plane's counters (for metrics).
func (d *Daemon) DataPlaneTotals() channel.Totals { return d.dp.Totals() }

// addrOrEmpty is a's text, or "" when there is no address yet.
func addrOrEmpty(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}
