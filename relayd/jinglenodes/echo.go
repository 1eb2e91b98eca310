package jinglenodes

import (
	"encoding/xml"

	"mellium.im/xmlstream"
)

// channelEcho is the payload of a channel request as its refusal echoes
// it, before the <error/> (RFC 6120 §8.3.1 lets an error reply carry the
// request's payload); nil when req's payload is not a channel request or
// was not read.
//
// The echo is for the Jingle Nodes library of Jitsi-family clients: it
// takes every answer to a channel request for a channel IQ, and its
// provider builds one only from a <channel/> element in the #channel
// namespace. Without one an error reply becomes a generic IQ and the
// client fails on the cast; with it the client gets a channel without
// host or ports, which it reads as "no relay".
//
// The echo is the element's name and namespace with its unqualified
// attributes as received (protocol, and anything else the requester put
// there), each once: of repeats the last, as the protocol is read (two
// would make the answer not well-formed, and a server closes the relay's
// stream for that). Left out are namespace declarations (the encoder
// writes the element's own), qualified attributes (the encoder would have
// to invent prefixes for them) and the attributes a grant carries, so that
// no error can read as a channel to a client that looks only at host and
// ports. A channel request has no children, so none are echoed. Its size
// is bounded by the request parser's caps (maxAttrs attributes, within
// the session's stanza limit).
func channelEcho(req Request) xml.TokenReader {
	if !isChannelRequest(req.Payload) {
		return nil
	}
	attrs := make([]xml.Attr, 0, len(req.Attrs))
	for _, a := range req.Attrs {
		if a.Name.Space != "" || a.Name.Local == "xmlns" || isGrantAttr(a.Name.Local) {
			continue
		}
		if i := attrIndex(attrs, a.Name.Local); i >= 0 {
			attrs[i].Value = a.Value // the last one wins, as in parseProtocol
			continue
		}
		attrs = append(attrs, a)
	}
	return xmlstream.Wrap(nil, xml.StartElement{Name: req.Payload, Attr: attrs})
}

// isChannelRequest reports whether name is that of a channel request's
// payload: <channel/>, or the legacy <candidate/>, in #channel.
func isChannelRequest(name xml.Name) bool {
	return name.Space == NSChannel && (name.Local == "channel" || name.Local == "candidate")
}

// isGrantAttr reports an attribute of a granted channel (channelResult),
// never echoed in an error.
func isGrantAttr(local string) bool {
	switch local {
	case "id", "host", "localport", "remoteport", "expire", "maxkbps":
		return true
	}
	return false
}

func attrIndex(attrs []xml.Attr, local string) int {
	for i, a := range attrs {
		if a.Name.Local == local {
			return i
		}
	}
	return -1
}
