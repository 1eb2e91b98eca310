package turn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"
)

// stunRequest builds a STUN message of type typ with the given attribute
// types (4 bytes of value each).
func stunRequest(typ uint16, attrs ...uint16) []byte {
	b := make([]byte, 20, 20+8*len(attrs))
	binary.BigEndian.PutUint16(b[0:], typ)
	binary.BigEndian.PutUint16(b[2:], uint16(8*len(attrs)))
	binary.BigEndian.PutUint32(b[4:], 0x2112A442)
	for i := 8; i < 20; i++ {
		b[i] = byte(i)
	}
	for _, a := range attrs {
		b = binary.BigEndian.AppendUint16(b, a)
		b = binary.BigEndian.AppendUint16(b, 4)
		b = append(b, 0, 0, 0, 0)
	}
	return b
}

func TestUnauthenticated(t *testing.T) {
	cases := []struct {
		name string
		msg  []byte
		want bool
	}{
		{"allocate without integrity", stunRequest(0x0003, 0x0019), true},
		{"binding", stunRequest(0x0001), true},
		{"allocate with integrity", stunRequest(0x0003, 0x0019, 0x0006, 0x0008), false},
		{"with integrity-sha256", stunRequest(0x0003, 0x001C), false},
		{"send indication", stunRequest(0x0016, 0x0012), false},
		{"success response", stunRequest(0x0101), false},
		{"channel data", []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}, false},
		{"short", []byte{0, 1, 0, 0}, false},
		{"attribute past the end", append(stunRequest(0x0003), 0x00, 0x08), true},
	}
	for _, c := range cases {
		if got := unauthenticated(c.msg); got != c.want {
			t.Errorf("%s: unauthenticated = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestUnprotectedAnswer(t *testing.T) {
	cases := []struct {
		name string
		msg  []byte
		want bool
	}{
		{"401", stunRequest(0x0113, 0x0009, 0x0015, 0x0014), true},
		{"binding success", stunRequest(0x0101, 0x0020, 0x8028), true},
		{"allocate success", stunRequest(0x0103, 0x0016, 0x000D, 0x0020, 0x0008), false},
		{"error with integrity-sha256", stunRequest(0x0113, 0x0009, 0x001C), false},
		{"request", stunRequest(0x0003, 0x0019), false},
		{"data indication", stunRequest(0x0017, 0x0012, 0x0013), false},
		{"channel data", []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}, false},
		{"short", []byte{1, 1, 0, 0}, false},
	}
	for _, c := range cases {
		if got := unprotectedAnswer(c.msg); got != c.want {
			t.Errorf("%s: unprotectedAnswer = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestUnauthenticatedRequestsRateLimited(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(r.srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const sent = 3 * unauthBurst
	for range sent {
		if _, err := c.Write(stunRequest(0x0003, 0x0019)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "the requests over the burst refused", func() bool {
		return r.srv.Stats().Refused[RefusedRateLimit] >= sent-unauthBurst-2 // a few tokens refill meanwhile
	})
	answers := 0
	buf := make([]byte, 1500)
	for {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(buf); err != nil {
			break
		}
		answers++
	}
	if answers == 0 || answers > unauthBurst+2 {
		t.Fatalf("%d answers to %d unauthenticated requests, want 1-%d", answers, sent, unauthBurst+2)
	}
}
