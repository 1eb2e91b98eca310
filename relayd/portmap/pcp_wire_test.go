package portmap

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

// pcpAnswer builds the response a router gives to req.
func pcpAnswer(req []byte, result byte, lifetime uint32, extPort uint16, ext netip.Addr) []byte {
	b := make([]byte, pcpMAPSize)
	copy(b, req)
	b[0], b[1], b[2], b[3] = pcpVersion, pcpResponseBit|pcpOpMAP, 0, result
	binary.BigEndian.PutUint32(b[4:], lifetime)
	clear(b[8:24]) // epoch and reserved
	binary.BigEndian.PutUint16(b[42:], extPort)
	e := ext.As16()
	copy(b[44:60], e[:])
	return b
}

func TestPCPMapRoundTrip(t *testing.T) {
	nonce := [12]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	req := pcpMapRequest(nonce, netip.MustParseAddr("192.168.1.5"), Port{Transport: UDP, Port: 40000}, 3600)
	if len(req) != 64 || req[60] != pcpOptPreferFailure || req[0] != 2 || req[1] != 1 || binary.BigEndian.Uint32(req[4:]) != 3600 {
		t.Fatalf("request header % x", req[:8])
	}
	if got := netip.AddrFrom16([16]byte(req[8:24])).Unmap(); got != netip.MustParseAddr("192.168.1.5") {
		t.Fatalf("client address %s", got)
	}
	r, err := parsePCPMapResponse(pcpAnswer(req, pcpSuccess, 1800, 40000, netip.MustParseAddr("198.51.100.7")))
	if err != nil {
		t.Fatal(err)
	}
	if r.result != 0 || r.lifetime != 1800 || r.nonce != nonce || r.proto != 17 || r.internalPort != 40000 || r.externalPort != 40000 ||
		r.external != netip.MustParseAddr("198.51.100.7") {
		t.Fatalf("parsed %+v", r)
	}
}

func TestParsePCPRefusesNonPCP(t *testing.T) {
	natpmpUnsupported := []byte{0, 0x81, 0, 1, 0, 0, 0, 0}
	for name, b := range map[string][]byte{
		"empty":              nil,
		"nat-pmp answer":     natpmpUnsupported,
		"request not answer": pcpMapRequest([12]byte{}, netip.MustParseAddr("10.0.0.2"), Port{Transport: UDP, Port: 5}, 1),
		"too long":           append(pcpAnswer(make([]byte, 60), 0, 1, 1, netip.MustParseAddr("1.2.3.4")), make([]byte, 1100)...),
		"truncated":          pcpAnswer(make([]byte, 60), 0, 1, 1, netip.MustParseAddr("1.2.3.4"))[:40],
	} {
		if _, err := parsePCPMapResponse(b); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
	// An error answer without opcode data still gives its result code.
	short := pcpAnswer(make([]byte, 60), pcpNotAuthorized, 0, 0, netip.Addr{})[:24]
	if r, err := parsePCPMapResponse(short); err != nil || r.result != pcpNotAuthorized {
		t.Fatalf("short error answer: %+v %v", r, err)
	}
}

// FuzzParsePCPMapResponse: whatever a hostile "router" sends, the parser
// neither panics nor accepts a message of another size than PCP allows.
func FuzzParsePCPMapResponse(f *testing.F) {
	req := pcpMapRequest([12]byte{7}, netip.MustParseAddr("192.168.1.5"), Port{Transport: UDP, Port: 40000}, 60)
	f.Add(pcpAnswer(req, 0, 60, 40000, netip.MustParseAddr("198.51.100.7")))
	f.Add(pcpAnswer(req, pcpNotAuthorized, 0, 0, netip.Addr{})[:24])
	f.Add([]byte{0, 0x81, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePCPMapResponse(b)
		if err != nil {
			return
		}
		if len(b) < 24 || len(b) > pcpMaxMessage || b[0] != pcpVersion {
			t.Fatalf("accepted %d bytes, version %d", len(b), b[0])
		}
		if r.result == pcpSuccess && len(b) < pcpMAPSize {
			t.Fatalf("success without MAP data (%d bytes)", len(b))
		}
	})
}
