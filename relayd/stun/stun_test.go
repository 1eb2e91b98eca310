package stun

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// classicRequest is what Debian's stun-client 0.97 (`stun HOST 1`) sends: an
// RFC 3489 Binding request (no magic cookie, 16-byte transaction ID) with a
// CHANGE-REQUEST asking for no change.
var classicRequest = mustHex("00010008016e47108b70cb29e78073253e4cbf0f0003000400000000")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// build returns the raw bytes of a message made with pion's setters.
func build(t testing.TB, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(setters...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

// rawAttr is an attribute TLV with zero padding.
func rawAttr(typ uint16, value []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, typ)
	b = binary.BigEndian.AppendUint16(b, uint16(len(value)))
	b = append(b, value...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

// rawMessage assembles a header of type typ and cookie with the given
// attributes, and a FINGERPRINT when fp is set.
func rawMessage(typ uint16, cookie uint32, fp bool, attrs ...[]byte) []byte {
	var body []byte
	for _, a := range attrs {
		body = append(body, a...)
	}
	n := len(body)
	if fp {
		n += 8
	}
	m := binary.BigEndian.AppendUint16(nil, typ)
	m = binary.BigEndian.AppendUint16(m, uint16(n))
	m = binary.BigEndian.AppendUint32(m, cookie)
	m = append(m, []byte("txid-0123456")...)
	m = append(m, body...)
	if fp {
		m = append(m, rawAttr(0x8028, binary.BigEndian.AppendUint32(nil, crc32.ChecksumIEEE(m)^fingerprintXOR))...)
	}
	return m
}

// malformedCases are datagrams that must be dropped, with the reason.
func malformedCases(t testing.TB) []struct {
	name   string
	pkt    []byte
	reason DropReason
} {
	valid := build(t, stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	badFP := bytes.Clone(valid)
	badFP[len(badFP)-1] ^= 1
	badCookie := bytes.Clone(build(t, stun.TransactionID, stun.BindingRequest))
	badCookie[4] ^= 0xff
	afterFP := rawMessage(0x0001, magicCookie, true)
	afterFP = append(afterFP, rawAttr(0x8022, []byte("late"))...)
	binary.BigEndian.PutUint16(afterFP[2:4], uint16(len(afterFP)-headerSize))
	return []struct {
		name   string
		pkt    []byte
		reason DropReason
	}{
		{"rtp", append([]byte{0x80, 0x00, 0, 1}, make([]byte, 28)...), DropNotSTUN},
		{"dtls", append([]byte{0x16, 0xfe, 0xfd}, make([]byte, 30)...), DropNotSTUN},
		{"zrtp", append([]byte{0x10, 0x00, 0, 1}, make([]byte, 28)...), DropNotSTUN},
		{"empty", nil, DropTruncated},
		{"short-header", valid[:19], DropTruncated},
		{"truncated-body", valid[:len(valid)-4], DropTruncated},
		{"length-not-multiple-of-4", func() []byte {
			m := rawMessage(0x0001, magicCookie, false, []byte{0x80, 0x22, 0, 1, 'x', 0, 0})
			return m
		}(), DropBadLength},
		{"trailing-bytes", append(bytes.Clone(valid), 0, 0, 0, 0), DropBadLength},
		{"bad-cookie", badCookie, DropBadCookie},
		{"classic-without-classic-mode", classicRequest, DropBadCookie},
		{"attribute-overruns", rawMessage(0x0001, magicCookie, false, []byte{0x80, 0x22, 0, 8, 'a', 'b', 'c', 'd'}), DropBadAttribute},
		{"value-padding-missing", rawMessage(0x0001, magicCookie, false, []byte{0x80, 0x22, 0, 5, 'a', 'b', 'c', 'd'}), DropBadAttribute},
		{"change-request-size", rawMessage(0x0001, magicCookie, false, rawAttr(0x0003, []byte{0, 0})), DropBadAttribute},
		{"bad-fingerprint", badFP, DropBadFingerprint},
		{"fingerprint-size", rawMessage(0x0001, magicCookie, false, rawAttr(0x8028, []byte{1, 2, 3, 4, 5, 6, 7, 8})), DropBadFingerprint},
		{"attribute-after-fingerprint", afterFP, DropBadFingerprint},
		{"allocate", build(t, stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), stun.Fingerprint), DropNotBinding},
		{"binding-indication", build(t, stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.Fingerprint), DropIndication},
		{"binding-success", build(t, stun.TransactionID, stun.BindingSuccess, &stun.XORMappedAddress{IP: net.IPv4(192, 0, 2, 1), Port: 9}, stun.Fingerprint), DropResponse},
		{"binding-error", build(t, stun.TransactionID, stun.BindingError, stun.CodeBadRequest, stun.Fingerprint), DropResponse},
		{"unknown-required", rawMessage(0x0001, magicCookie, true, rawAttr(0x0024, []byte{0, 0, 0, 1})), DropUnknownAttribute},
		{"message-integrity", build(t, stun.TransactionID, stun.BindingRequest, stun.NewUsername("u"), stun.NewShortTermIntegrity("p"), stun.Fingerprint), DropUnknownAttribute},
		{"change-ip-and-port", rawMessage(0x0001, magicCookie, true, rawAttr(0x0003, []byte{0, 0, 0, 6})), DropUnknownAttribute},
		{"response-port", rawMessage(0x0001, magicCookie, true, rawAttr(0x0027, []byte{0x13, 0x88, 0, 0})), DropUnknownAttribute},
		{"oversize", rawMessage(0x0001, magicCookie, false, rawAttr(0x8000, make([]byte, MaxRequest))), DropOversize},
	}
}

// checkAnswer checks resp is a Binding success response to req (a
// non-classic request) reporting src, and returns it decoded.
func checkAnswer(t testing.TB, req, resp []byte, src netip.AddrPort) *stun.Message {
	t.Helper()
	if len(resp) > MaxResponse {
		t.Fatalf("response of %d bytes exceeds MaxResponse %d", len(resp), MaxResponse)
	}
	m := &stun.Message{Raw: bytes.Clone(resp)}
	if err := m.Decode(); err != nil {
		t.Fatalf("response does not decode: %v (% x)", err, resp)
	}
	if m.Type != stun.BindingSuccess {
		t.Fatalf("response type %v, want Binding success", m.Type)
	}
	if !bytes.Equal(m.TransactionID[:], req[8:20]) {
		t.Fatalf("transaction ID %x, want %x", m.TransactionID, req[8:20])
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Fatalf("fingerprint: %v", err)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err != nil {
		t.Fatalf("XOR-MAPPED-ADDRESS: %v", err)
	}
	got, ok := netip.AddrFromSlice(xa.IP)
	if !ok || netip.AddrPortFrom(got.Unmap(), uint16(xa.Port)) != netip.AddrPortFrom(src.Addr().Unmap().WithZone(""), src.Port()) {
		t.Fatalf("mapped address %s, want %s", xa, src)
	}
	return m
}

func TestHandleBinding(t *testing.T) {
	for _, src := range []netip.AddrPort{
		netip.MustParseAddrPort("203.0.113.7:40000"),
		netip.MustParseAddrPort("[2001:db8::7]:65535"),
		netip.MustParseAddrPort("[::ffff:198.51.100.9]:1"), // from a dual-stack socket
		netip.MustParseAddrPort("[fe80::1%eth0]:3478"),
	} {
		for name, req := range map[string][]byte{
			"bare":             build(t, stun.TransactionID, stun.BindingRequest),
			"fingerprint":      build(t, stun.TransactionID, stun.BindingRequest, stun.Fingerprint),
			"software":         build(t, stun.TransactionID, stun.BindingRequest, stun.NewSoftware("client 1.0"), stun.Fingerprint),
			"ice-controlling":  rawMessage(0x0001, magicCookie, true, rawAttr(0x802A, make([]byte, 8))),
			"change-no-change": rawMessage(0x0001, magicCookie, true, rawAttr(0x0003, []byte{0, 0, 0, 0})),
			"old-xor-mapped":   rawMessage(0x0001, magicCookie, false, rawAttr(0x8020, make([]byte, 8))),
		} {
			t.Run(fmt.Sprintf("%s/%s", src, name), func(t *testing.T) {
				h := newHandler(DefaultSoftware, false)
				resp, reason := h.handle(req, src)
				if resp == nil {
					t.Fatalf("dropped (%s)", reason)
				}
				m := checkAnswer(t, req, resp, src)
				var sw stun.Software
				if err := sw.GetFrom(m); err != nil || sw.String() != DefaultSoftware {
					t.Fatalf("SOFTWARE %q, %v", sw, err)
				}
				if got := m.Attributes[len(m.Attributes)-1].Type; got != stun.AttrFingerprint {
					t.Fatalf("last attribute %v, want FINGERPRINT", got)
				}
			})
		}
	}
}

func TestHandleDrops(t *testing.T) {
	src := netip.MustParseAddrPort("198.51.100.1:5000")
	h := newHandler(DefaultSoftware, false)
	for _, c := range malformedCases(t) {
		t.Run(c.name, func(t *testing.T) {
			resp, reason := h.handle(c.pkt, src)
			if resp != nil {
				t.Fatalf("answered % x", resp)
			}
			if reason != c.reason {
				t.Fatalf("reason %s, want %s", reason, c.reason)
			}
		})
	}
}

func TestHandleBadSource(t *testing.T) {
	req := build(t, stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	h := newHandler(DefaultSoftware, true)
	for _, src := range []string{
		"198.51.100.1:0", "[2001:db8::1]:0", "0.0.0.0:5000", "[::]:5000", "0.1.2.3:5000",
		"224.0.0.1:5000", "239.255.255.250:1900", "255.255.255.255:5000", "[ff02::1]:5000",
		"[::ffff:255.255.255.255]:5000", "[::ffff:224.0.0.251]:5353",
	} {
		if resp, reason := h.handle(req, netip.MustParseAddrPort(src)); resp != nil || reason != DropBadSource {
			t.Errorf("%s: answered=%v reason=%s, want bad_source", src, resp != nil, reason)
		}
	}
	if resp, reason := h.handle(req, netip.AddrPort{}); resp != nil || reason != DropBadSource {
		t.Errorf("zero source: answered=%v reason=%s", resp != nil, reason)
	}
}

func TestHandleClassic(t *testing.T) {
	src := netip.MustParseAddrPort("203.0.113.2:61000")
	h := newHandler(DefaultSoftware, true)
	resp, reason := h.handle(classicRequest, src)
	if resp == nil {
		t.Fatalf("classic request dropped (%s)", reason)
	}
	if len(resp) > MaxResponse {
		t.Fatalf("response of %d bytes", len(resp))
	}
	if binary.BigEndian.Uint16(resp[0:2]) != 0x0101 || !bytes.Equal(resp[4:20], classicRequest[4:20]) {
		t.Fatalf("header % x does not answer % x", resp[:20], classicRequest[:20])
	}
	if int(binary.BigEndian.Uint16(resp[2:4])) != len(resp)-headerSize {
		t.Fatalf("length field %d for %d bytes", binary.BigEndian.Uint16(resp[2:4]), len(resp))
	}
	fp := binary.BigEndian.Uint32(resp[len(resp)-4:])
	if want := crc32.ChecksumIEEE(resp[:len(resp)-8]) ^ fingerprintXOR; fp != want {
		t.Fatalf("fingerprint %08x, want %08x", fp, want)
	}
	// Decode the rest with pion by restoring the RFC 5389 cookie.
	m := &stun.Message{Raw: bytes.Clone(resp)}
	binary.BigEndian.PutUint32(m.Raw[4:8], magicCookie)
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Get(stun.AttrXORMappedAddress); err == nil {
		t.Fatal("classic response carries XOR-MAPPED-ADDRESS")
	}
	var ma stun.MappedAddress
	if err := ma.GetFrom(m); err != nil {
		t.Fatal(err)
	}
	if ma.String() != src.String() {
		t.Fatalf("MAPPED-ADDRESS %s, want %s", ma, src)
	}
	sw, err := m.Get(stun.AttrSoftware)
	if err != nil || string(sw) != "jnrelay " {
		t.Fatalf("SOFTWARE %q (%v), want it padded to a multiple of 4", sw, err)
	}

	// RFC 5389 requests get the same answer as without Classic.
	req := build(t, stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	resp, reason = h.handle(req, src)
	if resp == nil {
		t.Fatalf("dropped (%s)", reason)
	}
	checkAnswer(t, req, resp, src)

	// A classic NAT-type test asking for another address stays unanswered.
	changed := bytes.Clone(classicRequest)
	changed[len(changed)-1] = changeIP | changePort
	if resp, reason := h.handle(changed, src); resp != nil || reason != DropUnknownAttribute {
		t.Fatalf("change request: answered=%v reason=%s", resp != nil, reason)
	}
}

func TestResponseSizes(t *testing.T) {
	h := newHandler(DefaultSoftware, true)
	req := build(t, stun.TransactionID, stun.BindingRequest)
	for src, want := range map[string]int{"203.0.113.7:1": 52, "[2001:db8::7]:1": 64} {
		for _, r := range [][]byte{req, classicRequest} {
			if resp, _ := h.handle(r, netip.MustParseAddrPort(src)); len(resp) != want {
				t.Errorf("response to %s is %d bytes, want %d (see MaxResponse)", src, len(resp), want)
			}
		}
	}
}

func TestResponseBound(t *testing.T) {
	long := "0123456789abcdef0123456789abcdef"[:MaxSoftware]
	for _, sw := range []string{long, long[:29], "x"} {
		for _, classic := range []bool{false, true} {
			h := newHandler(sw, classic)
			req := build(t, stun.TransactionID, stun.BindingRequest)
			if classic {
				req = classicRequest
			}
			resp, reason := h.handle(req, netip.MustParseAddrPort("[2001:db8::1]:1"))
			if resp == nil {
				t.Fatalf("dropped (%s)", reason)
			}
			if len(resp) > MaxResponse {
				t.Fatalf("software %q classic=%v: %d bytes > MaxResponse %d", sw, classic, len(resp), MaxResponse)
			}
		}
	}
}

func TestHandleDoesNotAllocate(t *testing.T) {
	h := newHandler(DefaultSoftware, true)
	req := build(t, stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	bad := malformedCases(t)
	for name, src := range map[string]netip.AddrPort{
		"ipv4": netip.MustParseAddrPort("203.0.113.7:40000"),
		"ipv6": netip.MustParseAddrPort("[2001:db8::7]:40000"),
	} {
		if n := testing.AllocsPerRun(100, func() {
			if resp, _ := h.handle(req, src); resp == nil {
				panic("dropped")
			}
		}); n != 0 {
			t.Errorf("%s Binding: %v allocations per request, want 0", name, n)
		}
		if n := testing.AllocsPerRun(100, func() {
			h.handle(classicRequest, src)
		}); n != 0 {
			t.Errorf("%s classic Binding: %v allocations per request, want 0", name, n)
		}
		for _, c := range bad {
			if n := testing.AllocsPerRun(20, func() { h.handle(c.pkt, src) }); n != 0 {
				t.Errorf("%s %s: %v allocations per drop, want 0", name, c.name, n)
			}
		}
	}
}

func TestDropReasonNames(t *testing.T) {
	seen := map[string]bool{}
	for r := DropReason(0); r < numDropReasons; r++ {
		n := r.String()
		if n == "" || n == "unknown" || seen[n] {
			t.Fatalf("reason %d has name %q", r, n)
		}
		seen[n] = true
	}
	if DropReason(-1).String() != "unknown" || numDropReasons.String() != "unknown" {
		t.Fatal("out-of-range reasons must be named unknown")
	}
	if !DropBadFingerprint.Malformed() || DropNotBinding.Malformed() || DropSendError.Malformed() {
		t.Fatal("Malformed classifies wrongly")
	}
}
