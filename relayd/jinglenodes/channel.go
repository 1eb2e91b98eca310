package jinglenodes

import (
	"encoding/xml"
	"errors"
	"strconv"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/admission"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// channel answers a channel request: refused for what the request itself
// lacks, then by the admission gate, or allocated by the data plane. What
// no requester could get now (another transport, a relay that does not
// know its public address yet) is refused before the gate is asked, so it
// spends none of the requester's request rate.
func (h *Handler) channel(req Request) xml.TokenReader {
	from := req.IQ.From
	switch {
	case from.Equal(jid.JID{}):
		// A server always stamps the sender; a request without one was
		// forged on the way (a component's server can write anything)
		// and nobody could be told of its end.
		return h.refuse(req, refusedNoSender, "")
	case h.fromSelf(from):
		return h.refuse(req, refusedFromSelf, "")
	case req.Protocol != "udp":
		return h.refuse(req, refusedProtocol, "protocol "+req.Protocol)
	}
	host := h.svc.cfg.PublicHost()
	if !host.IsValid() {
		return h.refuse(req, refusedNoPublicAddress, "")
	}
	ticket, err := h.svc.gate.Reserve(admission.Request{Requester: from, Policy: h.policy})
	if err != nil {
		refused, ok := errors.AsType[*admission.Refusal](err)
		if !ok {
			refused = &admission.Refusal{Text: err.Error()} // answered as internal
		}
		return h.refuse(req, admissionRefusal(refused), refused.Text)
	}
	info, err := h.svc.cfg.Allocator.Allocate()
	if err != nil {
		ticket.Cancel()
		return h.refuse(req, allocationRefusal(err), err.Error())
	}
	ticket.Commit(info.ID)
	h.svc.mu.Lock()
	h.svc.granted.Add(1)
	// The reservation is now the channel's: ChannelEnded releases it.
	h.svc.owners[info.ID] = owner{via: h.sess, relay: relayAddr(req.IQ.To, h.sess.Addr()), requester: from, ticket: ticket}
	h.svc.mu.Unlock()
	h.log.Info("channel granted", "from", from.String(), "channel", info.ID, "host", host.String(),
		"localport", info.LocalPort, "remoteport", info.RemotePort)
	return h.result(req.IQ, channelResult(info, host.String(), req.Legacy))
}

// fromSelf reports a request sent from the relay's own address (its own
// full JID, or any resource of a component's domain): only a forging
// server could send it, and the relay never asks itself for channels.
func (h *Handler) fromSelf(from jid.JID) bool {
	self := h.sess.Addr()
	return from.Equal(self) || (self.Localpart() == "" && from.Bare().Equal(self.Bare()))
}

// channelResult is the payload granting the channel info on host, in the
// legacy <candidate/> form when the request used it.
func channelResult(info channel.Info, host string, legacy bool) xml.TokenReader {
	name := "channel"
	if legacy {
		name = "candidate"
	}
	attrs := []xml.Attr{
		{Name: xml.Name{Local: "id"}, Value: info.ID},
		{Name: xml.Name{Local: "host"}, Value: host},
		{Name: xml.Name{Local: "localport"}, Value: strconv.Itoa(info.LocalPort)},
		{Name: xml.Name{Local: "remoteport"}, Value: strconv.Itoa(info.RemotePort)},
		{Name: xml.Name{Local: "protocol"}, Value: "udp"},
		{Name: xml.Name{Local: "expire"}, Value: strconv.Itoa(int(info.Expire.Seconds()))},
	}
	if info.MaxKbps > 0 {
		attrs = append(attrs, xml.Attr{Name: xml.Name{Local: "maxkbps"}, Value: strconv.Itoa(info.MaxKbps)})
	}
	return xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: NSChannel, Local: name}, Attr: attrs})
}
