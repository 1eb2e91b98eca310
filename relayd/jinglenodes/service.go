package jinglenodes

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"log/slog"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

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
	// Accepting reports whether the relay takes new channels (false while
	// it drains for shutdown): when false, <services/> leaves the relay
	// itself out (nil = always).
	Accepting func() bool
	// Admit is asked before each allocation: an error (a donor limit such
	// as a used-up data quota) refuses the request with
	// resource-constraint and the error's text, and leaves the relay out
	// of <services/> (nil = no limits).
	Admit  func() error
	Logger *slog.Logger
}

// Listing is one entry of a <services/> answer.
type Listing struct {
	Kind     string // relay, tracker, stun
	Policy   string // public or roster
	Address  string // a JID, or an IP address for stun
	Port     int    // stun only
	Protocol string // udp
}

// Service answers Jingle Nodes requests for any number of XMPP sessions and
// remembers who asked for each channel, to tell them when it ends.
type Service struct {
	cfg Config
	log *slog.Logger

	mu     sync.Mutex
	owners map[string]owner // channel id -> requester
	jids   *perJID          // per-requester limits

	granted atomic.Uint64
	refused [numRefusals]atomic.Uint64
}

// Refusal is why a channel request was refused.
type Refusal int

const (
	RefusedForbidden Refusal = iota
	RefusedNotImplemented
	RefusedUnavailable
	RefusedResourceConstraint
	RefusedInternal
	RefusedBadRequest
	RefusedPolicyViolation
	// RefusedDomainLimit is a policy-violation too: the requester's domain
	// holds its share of the relay (JIDLimits.DomainChannels).
	RefusedDomainLimit
	numRefusals
)

var refusalNames = [numRefusals]string{"forbidden", "feature_not_implemented", "service_unavailable", "resource_constraint", "internal", "bad_request", "policy_violation", "domain_limit"}

func (r Refusal) String() string { return refusalNames[r] }

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

// owner is where a channel's events go.
type owner struct {
	via       Session
	relay     jid.JID // the address the request was sent to: the event's from
	requester jid.JID
}

// New returns a Service.
func New(cfg Config) *Service {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name = "jnrelay"
	}
	return &Service{cfg: cfg, log: cfg.Logger, owners: make(map[string]owner), jids: newPerJID()}
}

// SetJIDLimits sets what one requester, and one domain, may take (live;
// 0 = no limit).
func (s *Service) SetJIDLimits(l JIDLimits) { s.jids.setLimits(l) }

// Handler answers the IQs of one XMPP session under policy (nil = public).
// Channel events for requests that arrived on sess go back through it.
func (s *Service) Handler(sess Session, policy *Policy) *Handler {
	if policy == nil {
		policy = &Policy{}
	}
	return &Handler{svc: s, sess: sess, policy: policy, log: s.log.With("session", sess.Name())}
}

// ChannelEnded tells the requester of an ended channel that it is gone,
// with a jinglenodes#event "killed" IQ. It is a no-op for channels not
// allocated through this service.
func (s *Service) ChannelEnded(ctx context.Context, e channel.End) {
	s.mu.Lock()
	o, ok := s.owners[e.ID]
	delete(s.owners, e.ID)
	s.mu.Unlock()
	if !ok {
		return
	}
	s.jids.release(o.requester)
	id, err := stanzaID()
	if err != nil {
		s.log.Error("send channel event", "channel", e.ID, "err", err)
		return
	}
	iq := stanza.IQ{ID: id, Type: stanza.SetIQ, To: o.requester, From: o.relay}
	event := xmlstream.Wrap(nil, xml.StartElement{
		Name: xml.Name{Space: NSEvent, Local: "channel"},
		Attr: []xml.Attr{
			{Name: xml.Name{Local: "event"}, Value: "killed"},
			{Name: xml.Name{Local: "id"}, Value: e.ID},
			{Name: xml.Name{Local: "time"}, Value: strconv.Itoa(int(e.Duration.Seconds()))},
		},
	})
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := o.via.Send(ctx, iq.Wrap(event)); err != nil {
		s.log.Warn("channel killed event not delivered", "session", o.via.Name(), "channel", e.ID,
			"requester", o.requester.String(), "err", err)
		return
	}
	s.log.Info("channel killed event sent", "session", o.via.Name(), "channel", e.ID,
		"requester", o.requester.String(), "reason", string(e.Reason))
}

// Handler answers IQs arriving on one XMPP session. It implements
// mellium's xmpp.Handler.
type Handler struct {
	svc    *Service
	sess   Session
	policy *Policy
	log    *slog.Logger
}

// HandleXMPP answers one top-level element of the stream. Every IQ get or
// set gets exactly one answer; other elements are ignored.
func (h *Handler) HandleXMPP(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
	if start.Name.Local != "iq" {
		return nil // messages and presences are not for a relay
	}
	req, err := ParseRequest(*start, t)
	var reply xml.TokenReader
	var bad *Malformed
	switch {
	case errors.As(err, &bad):
		h.log.Info("malformed request", "from", bad.IQ.From.String(), "reason", bad.Reason)
		if bad.IQ.ID == "" || bad.IQ.Type == stanza.ResultIQ || bad.IQ.Type == stanza.ErrorIQ {
			return nil // nothing to address an answer to
		}
		reply = h.errorReply(bad.IQ, stanza.Modify, stanza.BadRequest, bad.Reason)
		h.svc.refused[RefusedBadRequest].Add(1)
	case err != nil:
		return err
	default:
		reply = h.answer(req)
	}
	if reply == nil {
		return nil
	}
	if _, err := xmlstream.Copy(t, reply); err != nil {
		return err
	}
	return nil
}

// answer builds the answer to a well-formed request (nil for responses).
func (h *Handler) answer(req Request) xml.TokenReader {
	switch req.Kind {
	case KindResponse:
		return nil
	case KindChannel:
		return h.channel(req)
	case KindServices:
		return h.result(req.IQ, h.services())
	case KindDiscoInfo:
		info, ok := h.svc.discoInfo(req.Node)
		if !ok {
			return h.errorReply(req.IQ, stanza.Cancel, stanza.ItemNotFound, "no such node")
		}
		return h.result(req.IQ, info)
	case KindDiscoItems:
		if req.Node != "" {
			return h.errorReply(req.IQ, stanza.Cancel, stanza.ItemNotFound, "no such node")
		}
		return h.result(req.IQ, xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: NSDiscoItem, Local: "query"}}))
	case KindPing:
		return h.result(req.IQ, nil)
	case KindRosterPush:
		return h.rosterPush(req)
	case KindExtServices:
		return h.extServices(req, false)
	case KindExtCredentials:
		return h.extServices(req, true)
	case KindTurnCredentials:
		return h.turnCredentials(req)
	}
	return h.errorReply(req.IQ, stanza.Cancel, stanza.ServiceUnavailable, "")
}

func (h *Handler) channel(req Request) xml.TokenReader {
	from := req.IQ.From
	// A server always stamps the sender; a request without one, or from
	// the relay's own address, was forged on the way (a component's
	// server can write anything) and nobody could be told of its end.
	if from.Equal(jid.JID{}) {
		h.log.Info("channel refused: request has no sender")
		h.svc.refused[RefusedBadRequest].Add(1)
		return h.errorReply(req.IQ, stanza.Modify, stanza.BadRequest, "the request has no sender")
	}
	if self := h.sess.Addr(); from.Equal(self) || (self.Localpart() == "" && from.Bare().Equal(self.Bare())) {
		h.log.Info("channel refused: request from the relay's own address", "from", from.String())
		h.svc.refused[RefusedForbidden].Add(1)
		return h.errorReply(req.IQ, stanza.Cancel, stanza.Forbidden, "the relay does not request channels from itself")
	}
	if ok, why := h.policy.Permit(from); !ok {
		h.log.Info("channel refused", "from", from.String(), "reason", why)
		h.svc.refused[RefusedForbidden].Add(1)
		return h.errorReply(req.IQ, stanza.Auth, stanza.Forbidden, why)
	}
	if req.Protocol != "udp" {
		h.svc.refused[RefusedNotImplemented].Add(1)
		h.log.Info("channel refused", "from", from.String(), "protocol", req.Protocol)
		return h.errorReply(req.IQ, stanza.Cancel, stanza.FeatureNotImplemented, "only udp channels are offered")
	}
	host := h.svc.cfg.PublicHost()
	if !host.IsValid() {
		h.log.Warn("channel refused: public address unknown", "from", from.String())
		h.svc.refused[RefusedUnavailable].Add(1)
		return h.errorReply(req.IQ, stanza.Wait, stanza.ServiceUnavailable, "relay public address not known yet")
	}
	if h.svc.cfg.Admit != nil {
		if err := h.svc.cfg.Admit(); err != nil {
			h.log.Info("channel refused: donor limit", "from", from.String(), "reason", err)
			h.svc.refused[RefusedResourceConstraint].Add(1)
			return h.errorReply(req.IQ, stanza.Wait, stanza.ResourceConstraint, err.Error())
		}
	}
	if err := h.svc.jids.reserve(from, time.Now()); err != nil {
		refusal, what := RefusedPolicyViolation, "requester"
		if _, ok := errors.AsType[*domainLimitError](err); ok {
			refusal, what = RefusedDomainLimit, "domain"
		}
		h.log.Info("channel refused: "+what+" limit", "from", from.String(), "reason", err)
		h.svc.refused[refusal].Add(1)
		return h.errorReply(req.IQ, stanza.Wait, stanza.PolicyViolation, err.Error())
	}
	info, err := h.svc.cfg.Allocator.Allocate()
	if err != nil {
		h.svc.jids.release(from)
		h.log.Warn("channel refused", "from", from.String(), "err", err)
		if errors.Is(err, channel.ErrPoolExhausted) {
			h.svc.refused[RefusedResourceConstraint].Add(1)
			return h.errorReply(req.IQ, stanza.Wait, stanza.ResourceConstraint, "no free relay ports")
		}
		if outOfResources(err) {
			h.svc.refused[RefusedResourceConstraint].Add(1)
			return h.errorReply(req.IQ, stanza.Wait, stanza.ResourceConstraint, "the relay is out of sockets or memory")
		}
		if errors.Is(err, channel.ErrDraining) {
			h.svc.refused[RefusedUnavailable].Add(1)
			return h.errorReply(req.IQ, stanza.Cancel, stanza.ServiceUnavailable, "relay is shutting down")
		}
		h.svc.refused[RefusedInternal].Add(1)
		return h.errorReply(req.IQ, stanza.Wait, stanza.InternalServerError, "could not open relay ports")
	}
	h.svc.mu.Lock()
	h.svc.granted.Add(1)
	// The reservation is now the channel's: ChannelEnded releases it.
	h.svc.owners[info.ID] = owner{via: h.sess, relay: relayAddr(req.IQ.To, h.sess.Addr()), requester: from}
	h.svc.mu.Unlock()
	h.log.Info("channel granted", "from", from.String(), "channel", info.ID, "host", host.String(),
		"localport", info.LocalPort, "remoteport", info.RemotePort)

	name := "channel"
	if req.Legacy {
		name = "candidate"
	}
	attrs := []xml.Attr{
		{Name: xml.Name{Local: "id"}, Value: info.ID},
		{Name: xml.Name{Local: "host"}, Value: host.String()},
		{Name: xml.Name{Local: "localport"}, Value: strconv.Itoa(info.LocalPort)},
		{Name: xml.Name{Local: "remoteport"}, Value: strconv.Itoa(info.RemotePort)},
		{Name: xml.Name{Local: "protocol"}, Value: "udp"},
		{Name: xml.Name{Local: "expire"}, Value: strconv.Itoa(int(info.Expire.Seconds()))},
	}
	if info.MaxKbps > 0 {
		attrs = append(attrs, xml.Attr{Name: xml.Name{Local: "maxkbps"}, Value: strconv.Itoa(info.MaxKbps)})
	}
	return h.result(req.IQ, xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: NSChannel, Local: name}, Attr: attrs}))
}

// external returns the XEP-0215 configuration (empty when none).
func (s *Service) external() External {
	if s.cfg.External == nil {
		return External{}
	}
	return s.cfg.External()
}

// relayAddr is the address a requester knows the relay by: the one it sent
// the request to, when set (any localpart or resource at the relay), else
// the session's own address.
func relayAddr(to, self jid.JID) jid.JID {
	if to.Equal(jid.JID{}) {
		return self
	}
	return to
}

// services lists this relay, then the configured listings (trackers,
// learned relays, STUN).
func (h *Handler) services() xml.TokenReader {
	policy := "public"
	if h.policy.RosterOnly {
		policy = "roster"
	}
	relay := xmlstream.Wrap(nil, xml.StartElement{
		Name: xml.Name{Local: "relay"},
		Attr: []xml.Attr{
			{Name: xml.Name{Local: "policy"}, Value: policy},
			{Name: xml.Name{Local: "address"}, Value: h.sess.Addr().String()},
			{Name: xml.Name{Local: "protocol"}, Value: "udp"},
		},
	})
	var entries []xml.TokenReader
	if (h.svc.cfg.Accepting == nil || h.svc.cfg.Accepting()) && (h.svc.cfg.Admit == nil || h.svc.cfg.Admit() == nil) {
		entries = append(entries, relay)
	}
	var listings []Listing
	if h.svc.cfg.Listings != nil {
		listings = h.svc.cfg.Listings()
	}
	if port := h.svc.external().STUNPort; port > 0 && h.svc.cfg.PublicHost().IsValid() {
		listings = append(listings, stunListing(h.svc.cfg.PublicHost(), port))
	}
	for _, l := range listings {
		attrs := []xml.Attr{
			{Name: xml.Name{Local: "policy"}, Value: cmp.Or(l.Policy, "public")},
			{Name: xml.Name{Local: "address"}, Value: l.Address},
		}
		if l.Port > 0 {
			attrs = append(attrs, xml.Attr{Name: xml.Name{Local: "port"}, Value: strconv.Itoa(l.Port)})
		}
		attrs = append(attrs, xml.Attr{Name: xml.Name{Local: "protocol"}, Value: cmp.Or(l.Protocol, "udp")})
		entries = append(entries, xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Local: l.Kind}, Attr: attrs}))
	}
	return xmlstream.Wrap(xmlstream.MultiReader(entries...), xml.StartElement{Name: xml.Name{Space: NS, Local: "services"}})
}

// result answers iq with a result carrying payload (nil for none). The
// answer is from the address the request was sent to, as servers require of
// components.
func (h *Handler) result(iq stanza.IQ, payload xml.TokenReader) xml.TokenReader {
	iq.To = relayAddr(iq.To, h.sess.Addr())
	return iq.Result(payload)
}

func (h *Handler) errorReply(iq stanza.IQ, typ stanza.ErrorType, cond stanza.Condition, text string) xml.TokenReader {
	iq.To = relayAddr(iq.To, h.sess.Addr())
	e := stanza.Error{Type: typ, Condition: cond}
	if text != "" {
		e.Text = map[string]string{"": text}
	}
	return iq.Error(e)
}

// stanzaID returns a random id for stanzas we originate.
func stanzaID() (string, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "jn-" + hex.EncodeToString(b[:]), nil
}

// outOfResources reports an allocation that failed for want of file
// descriptors or kernel memory: the relay is full for now, as when its
// port range is (the open-file limit below what the range needs, or the
// whole system short of them).
func outOfResources(err error) bool {
	for _, e := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
