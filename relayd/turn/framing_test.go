package turn

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"
)

// channelDataWatch is a client's TCP connection that notes when the
// client first writes a ChannelData frame (channel numbers 0x4000-0x4FFF:
// the first byte is 0x40-0x4F), i.e. once its channel binding is in use.
type channelDataWatch struct {
	net.Conn
	seen atomic.Bool
}

func (c *channelDataWatch) Write(b []byte) (int, error) {
	if len(b) > 0 && b[0]&0xF0 == 0x40 {
		c.seen.Store(true)
	}
	return c.Conn.Write(b)
}

// TestPionStreamFramingHoldsTinyChannelData reproduces a quirk of pion's
// stream framing (pion/turn v5.1.2, internal/proto/stun_conn.go,
// consumeSingleTURNFrame): it returns "incomplete" for any buffer shorter
// than 9 bytes, but a ChannelData frame with 0-4 bytes of payload is 4-8
// bytes long once padded. So over TCP and TLS such a frame is held, on
// the server (STUNConn wraps each accepted connection) as on pion's
// client, until the next bytes on the stream arrive, and is then
// delivered late, before them. Over UDP there is no framing and no delay.
// Media never is that small (RTP has a 12-byte header), so relayd does
// not work around it; this test fails once pion frames these frames at
// once, and the note in docs/ARCHITECTURE.md can go.
func TestPionStreamFramingHoldsTinyChannelData(t *testing.T) {
	r := newTestRelay(t, netip.Addr{})
	raw, err := net.Dial("tcp", r.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	conn := &channelDataWatch{Conn: raw}
	c := newClient(t, pionturn.NewSTUNConn(conn), r.srv.Addr().String(), "framing", time.Hour, nil)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	p := peer(t)
	// 100-byte datagrams (sent in Send indications until pion's client
	// has bound a channel) until one has gone as ChannelData.
	big := bytes.Repeat([]byte{'b'}, 100)
	for i := 0; !conn.seen.Load(); i++ {
		if i == 50 {
			t.Fatal("pion's client bound no channel in 50 datagrams")
		}
		if _, err := relay.WriteTo(big, p.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if got, _, err := readWithin(t, p, 5*time.Second); err != nil || len(got) != 100 {
			t.Fatalf("peer got %d bytes (%v), want 100", len(got), err)
		}
	}

	// 4 bytes of payload: an 8-byte frame, held by the server.
	if _, err := relay.WriteTo([]byte("tiny"), p.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	// Nothing to await: the peer must get nothing, so the relay has a
	// bounded while to (wrongly, for this test) deliver it.
	got, _, err := readWithin(t, p, 500*time.Millisecond)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("peer got %q (%v) at once: pion now frames a 4-byte ChannelData without waiting; drop this test and the note", got, err)
	}
	// The next frame releases it: the tiny datagram arrives first, late.
	if _, err := relay.WriteTo(big, p.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"tiny", string(big)} {
		if got, _, err := readWithin(t, p, 5*time.Second); err != nil || string(got) != want {
			t.Fatalf("peer got %q (%v), want %q", got, err, want)
		}
	}
}
