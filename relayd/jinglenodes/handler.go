package jinglenodes

import (
	"encoding/xml"
	"errors"
	"log/slog"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/jnrelay/jnrelay/relayd/admission"
)

// Handler answers IQs arriving on one XMPP session. It implements
// mellium's xmpp.Handler.
type Handler struct {
	svc    *Service
	sess   Session
	policy *admission.Policy
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
		if bad.IQ.ID == "" || bad.IQ.Type == stanza.ResultIQ || bad.IQ.Type == stanza.ErrorIQ {
			h.log.Info("malformed request", "from", bad.IQ.From.String(), "reason", bad.Reason)
			return nil // nothing to address an answer to
		}
		// A channel request that broke only after its payload element
		// was read (a protocol not offered, children past the caps)
		// still echoes it; one broken before has nothing to echo.
		req.IQ = bad.IQ
		reply = h.refuse(req, refusedMalformed, bad.Reason)
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

// relayAddr is the address a requester knows the relay by: the one it sent
// the request to, when set (any localpart or resource at the relay), else
// the session's own address.
func relayAddr(to, self jid.JID) jid.JID {
	if to.Equal(jid.JID{}) {
		return self
	}
	return to
}

// result answers iq with a result carrying payload (nil for none). The
// answer is from the address the request was sent to, as servers require of
// components.
func (h *Handler) result(iq stanza.IQ, payload xml.TokenReader) xml.TokenReader {
	iq.To = relayAddr(iq.To, h.sess.Addr())
	return iq.Result(payload)
}

func (h *Handler) errorReply(iq stanza.IQ, typ stanza.ErrorType, cond stanza.Condition, text string) xml.TokenReader {
	return h.errorEchoing(iq, nil, typ, cond, text)
}

// errorEchoing answers iq with an error whose <error/> follows echo, the
// request's payload (nil for none), as RFC 6120 §8.3.1 lets it.
func (h *Handler) errorEchoing(iq stanza.IQ, echo xml.TokenReader, typ stanza.ErrorType, cond stanza.Condition, text string) xml.TokenReader {
	iq.To = relayAddr(iq.To, h.sess.Addr())
	e := stanza.Error{Type: typ, Condition: cond}
	if text != "" {
		e.Text = map[string]string{"": text}
	}
	payload := e.TokenReader()
	if echo != nil {
		payload = xmlstream.MultiReader(echo, payload)
	}
	iq.Type = stanza.ErrorIQ
	iq.From, iq.To = iq.To, iq.From // as iq.Error does
	return iq.Wrap(payload)
}
