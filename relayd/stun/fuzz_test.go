package stun

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// FuzzHandle feeds arbitrary datagrams to the packet handler, with and
// without RFC 3489 compatibility, from an IPv4 and an IPv6 source. It must
// never panic, must answer exactly the valid Binding requests (as judged by
// isBindingRequest, written independently of the handler), and every answer
// must be a Binding success response with the request's transaction ID, a
// valid FINGERPRINT, the source address, and at most MaxResponse bytes.
func FuzzHandle(f *testing.F) {
	for _, c := range malformedCases(f) {
		f.Add(c.pkt, false)
	}
	f.Add(build(f, stun.TransactionID, stun.BindingRequest), false)
	f.Add(build(f, stun.TransactionID, stun.BindingRequest, stun.NewSoftware("x"), stun.Fingerprint), false)
	f.Add(classicRequest, true)
	f.Add(rawMessage(0x0001, magicCookie, true, rawAttr(0x0003, []byte{0, 0, 0, 0})), true)

	sources := []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.7:40000"),
		netip.MustParseAddrPort("[2001:db8::7]:3478"),
	}
	f.Fuzz(func(t *testing.T, data []byte, classic bool) {
		orig := bytes.Clone(data)
		h := newHandler(DefaultSoftware, classic)
		for _, src := range sources {
			resp, reason := h.handle(data, src)
			if !bytes.Equal(data, orig) {
				t.Fatal("handler modified its input")
			}
			want := isBindingRequest(data, classic)
			if (resp != nil) != want {
				t.Fatalf("answered=%v (reason %s), valid Binding request=%v: % x", resp != nil, reason, want, data)
			}
			if resp == nil {
				if reason < 0 || reason >= numDropReasons || reason == DropBadSource || reason == DropSendError {
					t.Fatalf("dropped with reason %d (%s)", reason, reason)
				}
				continue
			}
			if len(resp) > MaxResponse {
				t.Fatalf("response of %d bytes > MaxResponse", len(resp))
			}
			if binary.BigEndian.Uint32(data[4:8]) == magicCookie {
				checkAnswer(t, data, resp, src)
				continue
			}
			// Classic: same 16-byte ID, FINGERPRINT over the bytes as sent,
			// MAPPED-ADDRESS once the cookie is restored for pion.
			if binary.BigEndian.Uint16(resp[0:2]) != 0x0101 || !bytes.Equal(resp[4:20], data[4:20]) {
				t.Fatalf("classic answer header % x for request % x", resp[:20], data[:20])
			}
			if fp := binary.BigEndian.Uint32(resp[len(resp)-4:]); fp != crc32.ChecksumIEEE(resp[:len(resp)-8])^fingerprintXOR {
				t.Fatal("classic answer has a bad FINGERPRINT")
			}
			m := &stun.Message{Raw: bytes.Clone(resp)}
			binary.BigEndian.PutUint32(m.Raw[4:8], magicCookie)
			var ma stun.MappedAddress
			if err := m.Decode(); err != nil {
				t.Fatal(err)
			}
			if err := ma.GetFrom(m); err != nil || ma.String() != src.String() {
				t.Fatalf("classic MAPPED-ADDRESS %s (%v), want %s", ma, err, src)
			}
		}
	})
}

// isBindingRequest is the reference acceptance rule: a Binding request
// (type 0x0001) of at most MaxRequest bytes whose length field is a multiple
// of 4 covering the datagram exactly, with the magic cookie unless classic,
// whose attributes tile the body, whose FINGERPRINT if any is last and
// correct, and whose only comprehension-required attribute can be a 4-byte
// CHANGE-REQUEST with neither change flag.
func isBindingRequest(p []byte, classic bool) bool {
	if len(p) < 20 || len(p) > MaxRequest || p[0] != 0 || p[1] != 1 {
		return false
	}
	if n := int(p[2])<<8 | int(p[3]); n%4 != 0 || n != len(p)-20 {
		return false
	}
	if !classic && !bytes.Equal(p[4:8], []byte{0x21, 0x12, 0xa4, 0x42}) {
		return false
	}
	for off := 20; off < len(p); {
		if off+4 > len(p) {
			return false
		}
		typ := int(p[off])<<8 | int(p[off+1])
		n := int(p[off+2])<<8 | int(p[off+3])
		end := off + 4 + (n+3)/4*4
		if end > len(p) {
			return false
		}
		v := p[off+4 : off+4+n]
		switch {
		case typ == 0x8028:
			if n != 4 || end != len(p) || crc32.ChecksumIEEE(p[:off])^0x5354554e != uint32(v[0])<<24|uint32(v[1])<<16|uint32(v[2])<<8|uint32(v[3]) {
				return false
			}
		case typ == 0x0003:
			if n != 4 || v[3]&6 != 0 {
				return false
			}
		case typ < 0x8000:
			return false
		}
		off = end
	}
	return true
}
