package jinglenodes

import (
	"context"
	"encoding/xml"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"

	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// Allocator is what the service needs of the data plane.
type Allocator interface {
	Allocate() (channel.Info, error)
}

// Session is what the service needs of an XMPP session: sending on its
// current connection (failing while it is down) and its address.
type Session interface {
	Send(ctx context.Context, r xml.TokenReader) error
	// Addr is the session's own address: a component domain, or a client
	// account's full JID while connected.
	Addr() jid.JID
	Name() string
}

// Config configures a Service.
type Config struct {
	Allocator Allocator
	// Admission admits and reserves every channel before it is allocated
	// (the request policy, drain, quotas, max_channels, per-requester and
	// per-domain limits); while it would refuse any request for the
	// relay's own state, <services/> leaves the relay itself out (nil = a
	// gate with no limits).
	Admission *admission.Gate
	// PublicHost returns the address put in channel results as host.
	PublicHost func() netip.Addr
	// Name is the identity name shown in disco#info.
	Name string
	// Listings returns what <services/> lists besides the relay itself:
	// trackers, healthy relays learned by the tracker, the STUN service.
	Listings func() []Listing
	// External returns what XEP-0215 announces; its STUN server is also
	// listed in <services/> (nil = nothing).
	External func() External
	Logger   *slog.Logger
}

// Service answers Jingle Nodes requests for any number of XMPP sessions and
// remembers who asked for each channel, to tell them when it ends.
type Service struct {
	cfg  Config
	log  *slog.Logger
	gate *admission.Gate

	mu     sync.Mutex
	owners map[string]owner // channel id -> requester

	granted atomic.Uint64
	refused [numRefusals]atomic.Uint64
}

// owner is where a channel's events go, and the admission it holds.
type owner struct {
	via       Session
	relay     jid.JID // the address the request was sent to: the event's from
	requester jid.JID
	ticket    *admission.Ticket
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name = "jnrelay"
	}
	gate := cfg.Admission
	if gate == nil {
		gate = admission.New(admission.Config{})
	}
	return &Service{cfg: cfg, log: cfg.Logger, gate: gate, owners: make(map[string]owner)}
}

// RequestStats count channel requests by outcome since start.
type RequestStats struct {
	Granted uint64
	Refused map[string]uint64 // by Refusal name
}

// Stats returns the channel request counters.
func (s *Service) Stats() RequestStats {
	st := RequestStats{Granted: s.granted.Load(), Refused: make(map[string]uint64, numRefusals)}
	for r := range s.refused {
		st.Refused[Refusal(r).String()] = s.refused[r].Load()
	}
	return st
}

// Handler answers the IQs of one XMPP session under policy (nil = public).
// Channel events for requests that arrived on sess go back through it.
func (s *Service) Handler(sess Session, policy *admission.Policy) *Handler {
	if policy == nil {
		policy = &admission.Policy{}
	}
	return &Handler{svc: s, sess: sess, policy: policy, log: s.log.With("session", sess.Name())}
}

// external returns the XEP-0215 configuration (empty when none).
func (s *Service) external() External {
	if s.cfg.External == nil {
		return External{}
	}
	return s.cfg.External()
}
