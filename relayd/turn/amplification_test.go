package turn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestAnswerBudget(t *testing.T) {
	if a := answerAllowance("jnrelay"); a != minAnswerAllowance {
		t.Fatalf("allowance of realm jnrelay %d, want %d", a, minAnswerAllowance)
	}
	if a := answerAllowance(strings.Repeat("r", 127)); a != 2*188 {
		t.Fatalf("allowance of a 127-byte realm %d, want two 188-byte 401s", a)
	}
	const answerAllowance = minAnswerAllowance
	b := newAnswerBudget(answerAllowance)
	src := netip.MustParseAddr("192.0.2.1")
	t0 := time.Unix(1000, 0)
	// A real client's first Allocate (36 bytes) gets its 401 (68) at once,
	// and a second one too.
	b.received(src, 36, t0)
	if !b.spend(src, 68, t0) {
		t.Fatal("first 401 refused")
	}
	b.received(src, 36, t0)
	if !b.spend(src, 68, t0) {
		t.Fatal("second 401 refused")
	}
	// A flood of 20-byte requests answered with 68 bytes: out never
	// exceeds in plus the allowance, whatever the pace, while the source
	// is never quiet for allowanceQuiet.
	in, out := 72, 136
	now := t0
	for range 10000 {
		now = now.Add(allowanceQuiet / 2)
		b.received(src, 20, now)
		in += 20
		if b.spend(src, 68, now) {
			out += 68
		}
	}
	if out > in+answerAllowance || out < in-68 {
		t.Fatalf("flood: %d bytes out for %d in, want at most in + %d and about in", out, in, answerAllowance)
	}
	// Quiet for allowanceQuiet: the allowance is back.
	now = now.Add(allowanceQuiet)
	b.received(src, 20, now)
	for i := range 3 { // 256 + 20 bytes of credit: three 401s and no more
		if !b.spend(src, 68, now) {
			t.Fatalf("401 %d after a quiet while refused: the allowance is not back", i)
		}
	}
	if b.spend(src, 200, now) {
		t.Fatal("more than the allowance back after a quiet while")
	}
	// Credit banked from large requests is bounded.
	for range 100 {
		b.received(src, 1500, now)
	}
	if !b.spend(src, maxAnswerCredit, now) || b.spend(src, 1, now) {
		t.Fatalf("banked credit is not bounded at %d", maxAnswerCredit)
	}
	// IPv6 sources count by /64; the table is bounded.
	a1, a2 := netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")
	b.received(a1, 0, now)
	if !b.spend(a2, answerAllowance, now) || b.spend(a1, 1, now) {
		t.Fatal("two addresses of one /64 have budgets of their own")
	}
	for i := range 3 * maxSources {
		b.received(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 20, now)
	}
	if n := len(b.sources); n > maxSources {
		t.Fatalf("%d sources tracked, bound %d", n, maxSources)
	}
}

// forgedIntegrityAllocate is an Allocate with empty USERNAME, REALM and
// NONCE and a MESSAGE-INTEGRITY of zeros (56 bytes): the rate limit takes
// it for an authenticated request, and pion answers it (438, a new
// nonce) without integrity.
func forgedIntegrityAllocate(id byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, 0x0003)
	b = binary.BigEndian.AppendUint16(b, 36)
	b = binary.BigEndian.AppendUint32(b, 0x2112A442)
	b = append(b, id, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
	for _, attr := range []uint16{0x0006, 0x0014, 0x0015} {
		b = binary.BigEndian.AppendUint16(b, attr)
		b = binary.BigEndian.AppendUint16(b, 0)
	}
	b = binary.BigEndian.AppendUint16(b, 0x0008)
	b = binary.BigEndian.AppendUint16(b, 20)
	return append(b, make([]byte, 20)...)
}

// TestFloodGetsNoAmplification floods the TURN port from one source
// (127.0.0.2) with small unauthenticated Allocates: bare ones first (the
// rate limit meets them), then ones with a forged integrity attribute
// (which it does not, and which pion answers with more bytes than they
// have): the bytes answered never exceed the bytes sent plus the
// allowance. A
// client at another address meanwhile allocates with no answer dropped.
func TestFloodGetsNoAmplification(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	flooder, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
	if err != nil {
		t.Fatal(err)
	}
	defer flooder.Close()
	server := net.UDPAddrFromAddrPort(r.srv.Addr())
	dropped := func() uint64 {
		st := r.srv.Stats()
		return st.Refused[RefusedAmplification] + st.Refused[RefusedRateLimit]
	}
	const flood = 2000
	in, out, answered, drops := 0, 0, 0, dropped()
	buf := make([]byte, 1500)
	for i := range flood {
		msg := forgedIntegrityAllocate(byte(i))
		if i < 2*unauthBurst {
			msg = stunRequest(0x0003)
			msg[8] = byte(i)
		}
		if _, err := flooder.WriteTo(msg, server); err != nil {
			t.Fatal(err)
		}
		in += len(msg)
		// One request in flight: each is either answered or counted as
		// dropped before the next goes.
		for deadline := time.Now().Add(10 * time.Second); ; {
			if d := dropped(); d > drops {
				drops = d
				break
			}
			flooder.SetReadDeadline(time.Now().Add(2 * time.Millisecond))
			if n, err := flooder.Read(buf); err == nil {
				out += n
				answered++
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("request %d neither answered nor counted as dropped", i)
			}
		}
	}
	st := r.srv.Stats()
	t.Logf("flood: %d requests, %d bytes in; %d answered, %d bytes out; %d over the rate, %d over the budget",
		flood, in, answered, out, st.Refused[RefusedRateLimit], st.Refused[RefusedAmplification])
	if allowance := answerAllowance("jnrelay"); out > in+allowance {
		t.Fatalf("%d bytes answered to %d sent: more than the allowance of %d over", out, in, allowance)
	}
	if st.Refused[RefusedAmplification] == 0 {
		t.Fatal("no answer refused for the budget: the flood did not reach it")
	}

	// Another source is unaffected: pion's client allocates, and no
	// answer to it is dropped.
	before := r.srv.Stats().Refused[RefusedAmplification]
	if _, err := r.client(t, "fresh", time.Hour).Allocate(); err != nil {
		t.Fatal(err)
	}
	if after := r.srv.Stats().Refused[RefusedAmplification]; after != before {
		t.Fatalf("%d answers to a fresh client dropped", after-before)
	}
}
