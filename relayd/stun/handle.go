package stun

import (
	"encoding/binary"
	"hash/crc32"
	"net"
	"net/netip"

	"github.com/pion/stun/v4"
)

const (
	// MaxRequest is the largest datagram examined; larger ones are dropped
	// (DropOversize). A Binding request is normally 20–100 bytes.
	MaxRequest = 1500
	// MaxSoftware is the longest SOFTWARE value New accepts, in bytes. It
	// keeps MaxResponse small.
	MaxSoftware = 32
	// MaxResponse bounds every response: header (20) + XOR-MAPPED-ADDRESS or
	// MAPPED-ADDRESS for IPv6 (4+20) + SOFTWARE (4+MaxSoftware) + FINGERPRINT
	// (4+4) = 88 bytes. The smallest request answered is a bare 20-byte
	// header, so a spoofed request yields at most one response of at most
	// 4.4 times its size (52 bytes, 2.6 times, for IPv4 and the default
	// SOFTWARE).
	MaxResponse = headerSize + 4 + 20 + 4 + MaxSoftware + 4 + 4
)

const (
	headerSize     = 20
	magicCookie    = 0x2112A442
	fingerprintXOR = 0x5354554e

	// CHANGE-REQUEST flags (RFC 5780 section 7.2): change IP, change port.
	changeIP   = 0x4
	changePort = 0x2
)

// handler turns one datagram into a response or a drop reason. It owns
// reusable messages, so a Binding exchange allocates nothing; it is not safe
// for concurrent use.
type handler struct {
	classic         bool
	software        stun.Software
	classicSoftware stun.Software // software padded with spaces to a multiple of 4
	req, res        stun.Message
	ip              [16]byte
}

func newHandler(software string, classic bool) *handler {
	h := &handler{
		classic:         classic,
		software:        stun.NewSoftware(software),
		classicSoftware: stun.NewSoftware(software + "   "[:(4-len(software)%4)%4]),
	}
	h.req.Raw = make([]byte, 0, MaxRequest)
	h.res.Raw = make([]byte, 0, MaxResponse)
	return h
}

// handle returns the response to send back to src for the datagram pkt, or
// nil and the reason it is dropped. The response aliases the handler's
// buffer and is valid until the next call.
func (h *handler) handle(pkt []byte, src netip.AddrPort) ([]byte, DropReason) {
	if !answerable(src) {
		return nil, DropBadSource
	}
	if len(pkt) > MaxRequest {
		return nil, DropOversize
	}
	if len(pkt) > 0 && pkt[0] > 3 {
		return nil, DropNotSTUN // RFC 7983: 0-3 is STUN; ZRTP, DTLS, TURN channels, RTP are above
	}
	if len(pkt) < headerSize {
		return nil, DropTruncated
	}
	length := int(binary.BigEndian.Uint16(pkt[2:4]))
	switch {
	case length%4 != 0:
		return nil, DropBadLength
	case headerSize+length > len(pkt):
		return nil, DropTruncated
	case headerSize+length < len(pkt):
		return nil, DropBadLength
	}
	classic := binary.BigEndian.Uint32(pkt[4:8]) != magicCookie
	if classic && !h.classic {
		return nil, DropBadCookie
	}
	unknown, reason, ok := checkAttributes(pkt)
	if !ok {
		return nil, reason
	}
	var typ stun.MessageType
	typ.ReadValue(binary.BigEndian.Uint16(pkt[0:2]))
	switch {
	case typ.Class == stun.ClassIndication:
		return nil, DropIndication
	case typ.Class != stun.ClassRequest:
		return nil, DropResponse
	case typ.Method != stun.MethodBinding:
		return nil, DropNotBinding
	case unknown:
		return nil, DropUnknownAttribute
	}

	h.req.Raw = append(h.req.Raw[:0], pkt...)
	if classic {
		// pion decodes RFC 5389 messages only; the cookie is restored in
		// the response below.
		binary.BigEndian.PutUint32(h.req.Raw[4:8], magicCookie)
	}
	if err := h.req.Decode(); err != nil {
		return nil, DropBadAttribute // unreachable: checkAttributes walked the same TLVs
	}
	if err := h.respond(src, classic, pkt[4:8]); err != nil {
		return nil, DropSendError
	}
	return h.res.Raw, 0
}

// respond builds the Binding success response for h.req in h.res.
func (h *handler) respond(src netip.AddrPort, classic bool, cookie []byte) error {
	res := &h.res
	res.Reset()
	res.Type = stun.BindingSuccess
	res.TransactionID = h.req.TransactionID
	res.WriteHeader()

	addr := src.Addr().Unmap()
	var ip net.IP
	if addr.Is4() {
		a := addr.As4()
		ip = h.ip[:copy(h.ip[:], a[:])]
	} else {
		h.ip = addr.As16()
		ip = h.ip[:]
	}
	port := int(src.Port())
	software := h.software
	if classic {
		// RFC 5389 section 12.2: an RFC 3489 client gets MAPPED-ADDRESS and
		// its own cookie bytes back. Old clients (Debian's stun-client)
		// reject strings whose length is not a multiple of 4.
		software = h.classicSoftware
		mapped := stun.MappedAddress{IP: ip, Port: port}
		if err := mapped.AddTo(res); err != nil {
			return err
		}
	} else if err := (stun.XORMappedAddress{IP: ip, Port: port}).AddTo(res); err != nil {
		return err
	}
	if err := software.AddTo(res); err != nil {
		return err
	}
	if classic {
		copy(res.Raw[4:8], cookie)
	}
	return stun.Fingerprint.AddTo(res)
}

// checkAttributes walks the attributes of a message whose header was
// checked. It reports whether a comprehension-required attribute this
// server does not implement is present, or the malformation found.
func checkAttributes(pkt []byte) (unknown bool, reason DropReason, ok bool) {
	b := pkt[headerSize:]
	sawFingerprint := false
	for len(b) > 0 {
		if len(b) < 4 {
			return false, DropBadAttribute, false
		}
		typ := stun.AttrType(binary.BigEndian.Uint16(b[0:2]))
		n := int(binary.BigEndian.Uint16(b[2:4]))
		padded := (n + 3) &^ 3
		if len(b)-4 < padded {
			return false, DropBadAttribute, false
		}
		value := b[4 : 4+n]
		if sawFingerprint {
			return false, DropBadFingerprint, false // FINGERPRINT must be last
		}
		switch {
		case typ == stun.AttrFingerprint:
			sawFingerprint = true
			if n != 4 {
				return false, DropBadFingerprint, false
			}
			off := len(pkt) - len(b)
			if crc32.ChecksumIEEE(pkt[:off])^fingerprintXOR != binary.BigEndian.Uint32(value) {
				return false, DropBadFingerprint, false
			}
		case typ == stun.AttrChangeRequest:
			// Sent with no flags by RFC 3489 clients' first test. A request
			// to answer from another address or port cannot be honoured
			// with one socket, and answering from this one would mislead
			// the client's NAT type detection.
			if n != 4 {
				return false, DropBadAttribute, false
			}
			if binary.BigEndian.Uint32(value)&(changeIP|changePort) != 0 {
				unknown = true
			}
		case typ.Required():
			unknown = true
		}
		b = b[4+padded:]
	}
	return unknown, 0, true
}

// answerable reports whether a response may be sent to src at all.
func answerable(src netip.AddrPort) bool {
	a := src.Addr().Unmap()
	if src.Port() == 0 || !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
		return false
	}
	if a.Is4() {
		b := a.As4()
		return b[0] != 0 && b != [4]byte{255, 255, 255, 255} // 0.0.0.0/8 "this network"; limited broadcast
	}
	return true
}
