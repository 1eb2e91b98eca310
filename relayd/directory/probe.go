package directory

import (
	"context"
	"encoding/xml"
	"fmt"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
)

// ChannelProbe is a health probe: relay must grant a UDP channel (which
// expires unused at the relay: XEP-0278 has no release).
func ChannelProbe(ctx context.Context, q Requester, relay jid.JID) error {
	var ch struct {
		XMLName   xml.Name
		Host      string `xml:"host,attr"`
		LocalPort int    `xml:"localport,attr"`
	}
	want := xml.Name{Space: jinglenodes.NSChannel, Local: "channel"}
	req := xmlstream.Wrap(nil, xml.StartElement{Name: want, Attr: []xml.Attr{attr("protocol", "udp")}})
	if err := q.Query(ctx, relay, req, &ch); err != nil {
		return err
	}
	if ch.XMLName != want || ch.Host == "" || ch.LocalPort <= 0 {
		return fmt.Errorf("no channel granted (answer <%s xmlns=%q host=%q localport=%d>)", ch.XMLName.Local, ch.XMLName.Space, ch.Host, ch.LocalPort)
	}
	return nil
}
