package portmap

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// The PCP MAP opcode (RFC 6887 §11) on the wire. Requests and responses
// are a 24-byte header and 36 bytes of MAP data; a response may carry
// options after them, which relayd ignores.
const (
	pcpVersion     = 2
	pcpOpMAP       = 1
	pcpResponseBit = 0x80
	pcpMAPSize     = 24 + 36
	// pcpOptPreferFailure (RFC 6887 §13.2) asks the router to refuse
	// rather than map another external port: without it a router may
	// hunt through every port for one its rules allow (miniupnpd does,
	// for seconds), and relayd can use none but its own.
	pcpOptPreferFailure = 2
	pcpOptHeader        = 4
	// pcpMaxMessage is the largest PCP message (RFC 6887 §7): a longer
	// datagram is not PCP.
	pcpMaxMessage = 1100
)

// PCP result codes relayd tells apart (RFC 6887 §7.4).
const (
	pcpSuccess        = 0
	pcpUnsuppVersion  = 1
	pcpNotAuthorized  = 2
	pcpNoResources    = 8
	pcpUnsuppProtocol = 9
	pcpCannotProvide  = 11
)

// ipProto is the IANA protocol number of a transport.
func ipProto(t Transport) byte {
	if t == TCP {
		return 6
	}
	return 17
}

// pcpMapRequest encodes a MAP request for port p (the same port
// suggested outside, PREFER_FAILURE) from client, for lifetime seconds
// (0 deletes).
func pcpMapRequest(nonce [12]byte, client netip.Addr, p Port, lifetime uint32) []byte {
	b := make([]byte, pcpMAPSize+pcpOptHeader)
	b[pcpMAPSize] = pcpOptPreferFailure // option length 0
	b[0] = pcpVersion
	b[1] = pcpOpMAP
	binary.BigEndian.PutUint32(b[4:], lifetime)
	c := client.As16() // an IPv4 address as IPv4-mapped IPv6
	copy(b[8:24], c[:])
	copy(b[24:36], nonce[:])
	b[36] = ipProto(p.Transport)
	binary.BigEndian.PutUint16(b[40:], uint16(p.Port))
	binary.BigEndian.PutUint16(b[42:], uint16(p.Port))
	// Suggested external address: all zeros (IPv6 ::), no preference
	// (RFC 6887 §11.1 asks for ::ffff:0.0.0.0 for IPv4; both are "any").
	ext := netip.AddrFrom4([4]byte{}).As16()
	copy(b[44:60], ext[:])
	return b
}

// pcpMapResponse is what a MAP response says.
type pcpMapResponse struct {
	result       byte
	lifetime     uint32
	nonce        [12]byte
	proto        byte
	internalPort uint16
	externalPort uint16
	external     netip.Addr
}

var errNotPCP = errors.New("not a PCP MAP response")

// parsePCPMapResponse reads a MAP response. It never reads past b and
// refuses what is not a version-2 MAP response of a plausible size; an
// error response (result != 0) parses, as the result code is the answer.
func parsePCPMapResponse(b []byte) (pcpMapResponse, error) {
	var r pcpMapResponse
	if len(b) < 4 {
		return r, errNotPCP
	}
	if b[0] != pcpVersion {
		// A NAT-PMP-only router answers version 0 with "unsupported
		// version" (RFC 6887 §9).
		return r, fmt.Errorf("%w: version %d", errNotPCP, b[0])
	}
	if b[1] != pcpResponseBit|pcpOpMAP {
		return r, fmt.Errorf("%w: opcode %#x", errNotPCP, b[1])
	}
	r.result = b[3]
	if len(b) < pcpMAPSize || len(b) > pcpMaxMessage || len(b)%4 != 0 {
		if r.result != pcpSuccess && len(b) >= 24 && len(b) <= pcpMaxMessage {
			// An error response may come without the opcode data.
			r.lifetime = binary.BigEndian.Uint32(b[4:])
			return r, nil
		}
		return r, fmt.Errorf("%w: %d bytes", errNotPCP, len(b))
	}
	r.lifetime = binary.BigEndian.Uint32(b[4:])
	copy(r.nonce[:], b[24:36])
	r.proto = b[36]
	r.internalPort = binary.BigEndian.Uint16(b[40:])
	r.externalPort = binary.BigEndian.Uint16(b[42:])
	r.external = netip.AddrFrom16([16]byte(b[44:60])).Unmap()
	return r, nil
}
