package jinglenodes

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/jnrelay/jnrelay/internal/randid"
)

// External describes the services announced through XEP-0215 (external
// service discovery) besides the relay itself.
type External struct {
	STUNPort int // the built-in STUN server's port on the public host; 0 = none
	TURN     *TURN
}

// TURN is a TURN server using TURN REST credentials (coturn's
// use-auth-secret): username "<expiry unix time>:<id>", password
// base64(HMAC-SHA1(secret, username)). It is an external server (Host
// set) or relayd's own (Builtin: at the relay's public address, the host
// channel results carry).
type TURN struct {
	Host      string
	Port      int
	Transport string // udp or tcp
	Secret    []byte
	TTL       time.Duration
	// Builtin: the server is relayd's own, at the relay's public address;
	// TCP says it also serves TCP on Port.
	Builtin, TCP bool
	// TLSPort, when set, is where the built-in server serves TURN over TLS
	// (announced as turns, transport tcp), at TLSHost: the name its
	// certificate is for, which clients check; empty = the public address.
	TLSPort int
	TLSHost string
	// Host6, when set for the built-in server (its sockets are
	// dual-stack), returns the relay's public IPv6 address: its turn
	// entries are announced there too, so that an IPv6-only client
	// reaches it (host entries are addresses: no name to resolve). Its
	// turns entries are not: their host is what the certificate names.
	Host6 func() netip.Addr
	// Minted, when set, is told who each credential id was minted for
	// (the built-in server counts allocations against that requester).
	Minted func(id string, requester jid.JID, expires time.Time)
}

// credentials issues TURN REST credentials valid for TTL from now for
// requester.
func (t *TURN) credentials(now time.Time, requester jid.JID) (username, password string, expires time.Time) {
	expires = now.Add(t.TTL).Truncate(time.Second)
	id := randid.Hex(6)
	username = strconv.FormatInt(expires.Unix(), 10) + ":" + id
	mac := hmac.New(sha1.New, t.Secret)
	mac.Write([]byte(username))
	if t.Minted != nil {
		t.Minted(id, requester, expires)
	}
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil)), expires
}

// transports are the transports the server is announced with.
func (t *TURN) transports() []string {
	if t.TCP && t.Transport != "tcp" {
		return []string{t.Transport, "tcp"}
	}
	return []string{t.Transport}
}

// host is where the server is reached: the relay's public address for
// the built-in server ("" while unknown).
func (t *TURN) host(public netip.Addr) string {
	if !t.Builtin {
		return t.Host
	}
	if !public.IsValid() {
		return ""
	}
	return public.String()
}

// host6 is the built-in server's IPv6 host, when it has one besides
// the public address ("" otherwise).
func (t *TURN) host6(public netip.Addr) string {
	if !t.Builtin || t.Host6 == nil {
		return ""
	}
	if a := t.Host6(); a.IsValid() && a != public {
		return a.String()
	}
	return ""
}

func (t *TURN) uri(host, transport string) string {
	return fmt.Sprintf("turn:%s?transport=%s", net.JoinHostPort(host, strconv.Itoa(t.Port)), transport)
}

// protocolTLS is the turncredentials protocol that asks for TURN over
// TLS (a turns: URI).
const protocolTLS = "tls"

// tlsHost is where TURN over TLS is reached ("" when not served or the
// public address is unknown).
func (t *TURN) tlsHost(public netip.Addr) string {
	switch {
	case t.TLSPort == 0:
		return ""
	case t.TLSHost != "":
		return t.TLSHost
	}
	return t.host(public)
}

// offer is one <service/> entry of the TURN server.
type offer struct {
	typ, host string
	port      int
	transport string
}

// offers are the TURN server's entries of type wantType ("" = all):
// turn over each transport, and turns over TLS when served.
func (t *TURN) offers(public netip.Addr, wantType string) []offer {
	var out []offer
	if host := t.host(public); host != "" && (wantType == "" || wantType == "turn") {
		hosts := []string{host}
		if h6 := t.host6(public); h6 != "" {
			hosts = append(hosts, h6)
		}
		for _, h := range hosts {
			for _, transport := range t.transports() {
				out = append(out, offer{"turn", h, t.Port, transport})
			}
		}
	}
	if host := t.tlsHost(public); host != "" && t.host(public) != "" && (wantType == "" || wantType == "turns") {
		out = append(out, offer{"turns", host, t.TLSPort, "tcp"})
	}
	return out
}

// extServices answers XEP-0215 <services/> (optionally filtered by type):
// the STUN server, and the TURN server with fresh credentials for
// requesters the policy admits.
func (h *Handler) extServices(req Request, credentialsOnly bool) xml.TokenReader {
	ext := h.svc.external()
	wantType := attrValue(req.Attrs, "type")
	if credentialsOnly {
		wantType = attrValue(req.ChildAttrs, "type")
	}
	var entries []xml.TokenReader
	host := h.svc.cfg.PublicHost()
	if ext.STUNPort > 0 && host.IsValid() && (wantType == "" || wantType == "stun") && !credentialsOnly {
		entries = append(entries, xmlstream.Wrap(nil, service("stun", host.String(), ext.STUNPort, "udp")))
	}
	if t := ext.TURN; t != nil && len(t.offers(host, wantType)) > 0 {
		if ok, why := h.policy.Permit(req.IQ.From); !ok {
			if credentialsOnly {
				return h.errorReply(req.IQ, stanza.Auth, stanza.Forbidden, why)
			}
		} else {
			// One credential for every entry: the same server behind each.
			user, pass, expires := t.credentials(time.Now(), req.IQ.From)
			for _, o := range t.offers(host, wantType) {
				el := service(o.typ, o.host, o.port, o.transport)
				entries = append(entries, xmlstream.Wrap(nil, withAttrs(el,
					xml.Attr{Name: xml.Name{Local: "restricted"}, Value: "1"},
					xml.Attr{Name: xml.Name{Local: "username"}, Value: user},
					xml.Attr{Name: xml.Name{Local: "password"}, Value: pass},
					xml.Attr{Name: xml.Name{Local: "expires"}, Value: expires.UTC().Format(time.RFC3339)},
				)))
			}
		}
	}
	if credentialsOnly && len(entries) == 0 {
		return h.errorReply(req.IQ, stanza.Cancel, stanza.ItemNotFound, "no such service with credentials")
	}
	name := "services"
	if credentialsOnly {
		name = "credentials"
	}
	start := xml.StartElement{Name: xml.Name{Space: NSExtDisco, Local: name}}
	if wantType != "" && !credentialsOnly {
		start.Attr = []xml.Attr{{Name: xml.Name{Local: "type"}, Value: wantType}}
	}
	return h.result(req.IQ, xmlstream.Wrap(xmlstream.MultiReader(entries...), start))
}

// turnCredentials answers the Jingle Nodes <turn/> credentials request.
func (h *Handler) turnCredentials(req Request) xml.TokenReader {
	t := h.svc.external().TURN
	proto := attrValue(req.Attrs, "protocol")
	switch {
	case t == nil:
		return h.errorReply(req.IQ, stanza.Cancel, stanza.ServiceUnavailable, "no TURN server configured")
	case proto == "":
		return h.errorReply(req.IQ, stanza.Modify, stanza.BadRequest, "protocol attribute required")
	case !slices.Contains(t.transports(), proto) && (proto != protocolTLS || t.TLSPort == 0):
		return h.errorReply(req.IQ, stanza.Cancel, stanza.ItemNotFound, "TURN over "+proto+" not offered")
	}
	public := h.svc.cfg.PublicHost()
	host := t.host(public)
	if host == "" {
		return h.errorReply(req.IQ, stanza.Wait, stanza.ServiceUnavailable, "public address not known yet")
	}
	uri := t.uri(host, proto)
	if proto == protocolTLS {
		uri = fmt.Sprintf("turns:%s?transport=tcp", net.JoinHostPort(t.tlsHost(public), strconv.Itoa(t.TLSPort)))
	}
	if ok, why := h.policy.Permit(req.IQ.From); !ok {
		return h.errorReply(req.IQ, stanza.Auth, stanza.Forbidden, why)
	}
	user, pass, _ := t.credentials(time.Now(), req.IQ.From)
	return h.result(req.IQ, xmlstream.Wrap(nil, xml.StartElement{
		Name: xml.Name{Space: NSTurnCreds, Local: "turn"},
		Attr: []xml.Attr{
			{Name: xml.Name{Local: "ttl"}, Value: strconv.Itoa(int(t.TTL.Seconds()))},
			{Name: xml.Name{Local: "uri"}, Value: uri},
			{Name: xml.Name{Local: "username"}, Value: user},
			{Name: xml.Name{Local: "password"}, Value: pass},
		},
	}))
}

func service(typ, host string, port int, transport string) xml.StartElement {
	return xml.StartElement{Name: xml.Name{Local: "service"}, Attr: []xml.Attr{
		{Name: xml.Name{Local: "type"}, Value: typ},
		{Name: xml.Name{Local: "host"}, Value: host},
		{Name: xml.Name{Local: "port"}, Value: strconv.Itoa(port)},
		{Name: xml.Name{Local: "transport"}, Value: transport},
	}}
}

func withAttrs(el xml.StartElement, attrs ...xml.Attr) xml.StartElement {
	el.Attr = append(el.Attr, attrs...)
	return el
}

// stunListing is the <stun/> entry of <services/> for the built-in server.
func stunListing(host netip.Addr, port int) Listing {
	return Listing{Kind: ListingSTUN, Address: host.String(), Port: port, Protocol: "udp"}
}
