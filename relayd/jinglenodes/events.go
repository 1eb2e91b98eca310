package jinglenodes

import (
	"context"
	"encoding/xml"
	"strconv"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/stanza"

	"github.com/jnrelay/jnrelay/internal/randid"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// ChannelEnded gives back the ended channel's admission and tells its
// requester that it is gone, with a jinglenodes#event "killed" IQ. It is a
// no-op for channels not allocated through this service.
func (s *Service) ChannelEnded(ctx context.Context, e channel.End) {
	s.mu.Lock()
	o, ok := s.owners[e.ID]
	delete(s.owners, e.ID)
	s.mu.Unlock()
	if !ok {
		return
	}
	o.ticket.Release()
	iq := stanza.IQ{ID: stanzaID(), Type: stanza.SetIQ, To: o.requester, From: o.relay}
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

// stanzaID returns a random id for stanzas we originate.
func stanzaID() string { return "jn-" + randid.Hex(8) }
