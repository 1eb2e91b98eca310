package jinglenodes

import (
	"cmp"
	"context"
	"encoding/xml"
	"errors"
	"log/slog"

	"mellium.im/xmpp/stanza"

	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// Refusal is the counter a refused channel request is counted under: the
// XMPP error condition it was refused with, in snake case, except that
// the domain's share (a policy-violation too) is counted apart.
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
	// holds its share of the relay (admission.Limits.DomainChannels).
	RefusedDomainLimit
	numRefusals
)

var refusalNames = [numRefusals]string{"forbidden", "feature_not_implemented", "service_unavailable", "resource_constraint", "internal", "bad_request", "policy_violation", "domain_limit"}

func (r Refusal) String() string { return refusalNames[r] }

// Refusals lists every Refusal, in counter order.
func Refusals() []Refusal {
	out := make([]Refusal, numRefusals)
	for i := range out {
		out[i] = Refusal(i)
	}
	return out
}

// RelaysOwn reports whether the refusal is the relay's doing rather than
// the requester's: no free ports, no public address yet, ports that could
// not be bound. These are what an operator alerts on.
func (r Refusal) RelaysOwn() bool {
	return r == RefusedResourceConstraint || r == RefusedUnavailable || r == RefusedInternal
}

// refusal is how one cause of refusing a request is answered, counted and
// logged.
type refusal struct {
	counter Refusal
	typ     stanza.ErrorType
	cond    stanza.Condition
	text    string // the error's text; "" = the cause's own
	level   slog.Level
	log     string
}

// The refusals of the request itself, before admission is asked.
var (
	refusedMalformed = refusal{RefusedBadRequest, stanza.Modify, stanza.BadRequest, "",
		slog.LevelInfo, "malformed request"}
	refusedNoSender = refusal{RefusedBadRequest, stanza.Modify, stanza.BadRequest, "the request has no sender",
		slog.LevelInfo, "channel refused: request has no sender"}
	refusedFromSelf = refusal{RefusedForbidden, stanza.Cancel, stanza.Forbidden, "the relay does not request channels from itself",
		slog.LevelInfo, "channel refused: request from the relay's own address"}
	refusedProtocol = refusal{RefusedNotImplemented, stanza.Cancel, stanza.FeatureNotImplemented, "only udp channels are offered",
		slog.LevelInfo, "channel refused: protocol not offered"}
	refusedNoPublicAddress = refusal{RefusedUnavailable, stanza.Wait, stanza.ServiceUnavailable, "relay public address not known yet",
		slog.LevelWarn, "channel refused: public address unknown"}
	refusedDraining = refusal{RefusedUnavailable, stanza.Cancel, stanza.ServiceUnavailable, "relay is shutting down",
		slog.LevelInfo, "channel refused: draining"}
)

// admissionRefusal is how a refusal of the admission gate is answered.
func admissionRefusal(r *admission.Refusal) refusal {
	switch r.Reason {
	case admission.Denied:
		return refusal{RefusedForbidden, stanza.Auth, stanza.Forbidden, "", slog.LevelInfo, "channel refused: policy"}
	case admission.Draining:
		return refusedDraining
	case admission.QuotaExhausted, admission.RelayFull:
		return refusal{RefusedResourceConstraint, stanza.Wait, stanza.ResourceConstraint, "", slog.LevelInfo, "channel refused: donor limit"}
	case admission.RequesterRate, admission.RequesterChannels:
		return refusal{RefusedPolicyViolation, stanza.Wait, stanza.PolicyViolation, "", slog.LevelInfo, "channel refused: requester limit"}
	case admission.DomainShare:
		return refusal{RefusedDomainLimit, stanza.Wait, stanza.PolicyViolation, "", slog.LevelInfo, "channel refused: domain limit"}
	}
	return refusal{RefusedInternal, stanza.Wait, stanza.InternalServerError, "", slog.LevelError, "channel refused: unknown admission refusal"}
}

// allocationRefusal is how a failed allocation is answered: the relay is
// full (out of ports, descriptors or memory), draining, or broken.
func allocationRefusal(err error) refusal {
	switch {
	case errors.Is(err, channel.ErrPoolExhausted):
		return refusal{RefusedResourceConstraint, stanza.Wait, stanza.ResourceConstraint, "no free relay ports",
			slog.LevelWarn, "channel refused: no free ports"}
	case channel.OutOfResources(err):
		return refusal{RefusedResourceConstraint, stanza.Wait, stanza.ResourceConstraint, "the relay is out of sockets or memory",
			slog.LevelWarn, "channel refused: out of resources"}
	case errors.Is(err, channel.ErrDraining):
		return refusedDraining
	}
	return refusal{RefusedInternal, stanza.Wait, stanza.InternalServerError, "could not open relay ports",
		slog.LevelWarn, "channel refused: allocation failed"}
}

// refuse counts, logs and answers req with the refusal r, whose cause
// (a reason for the log, and the error's text when r has none) is why.
// A channel request's refusal echoes its payload (channelEcho).
func (h *Handler) refuse(req Request, r refusal, why string) xml.TokenReader {
	h.svc.refused[r.counter].Add(1)
	attrs := []any{"from", req.IQ.From.String()}
	if why != "" {
		attrs = append(attrs, "reason", why)
	}
	h.log.Log(context.Background(), r.level, r.log, attrs...)
	return h.errorEchoing(req.IQ, channelEcho(req), r.typ, r.cond, cmp.Or(r.text, why))
}
