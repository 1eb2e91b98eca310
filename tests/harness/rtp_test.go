package harness

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestPacketRoundTrip(t *testing.T) {
	rtp := Packet{PayloadType: 8, Seq: 65535, Timestamp: 0xdeadbeef, SSRC: 42, SentAt: 1234567890123, Tag: NewTag("caller")}
	b := rtp.AppendRTP(nil, 0)
	if len(b) != rtpMinLen || b[0] != 0x80 || b[1] != 8 {
		t.Fatalf("RTP encoding %x", b)
	}
	b = rtp.AppendRTP(nil, DefaultRTPSize)
	if len(b) != DefaultRTPSize {
		t.Fatalf("RTP size %d, want %d", len(b), DefaultRTPSize)
	}
	got, err := ParsePacket(b)
	if err != nil || got != rtp {
		t.Fatalf("ParsePacket(RTP) = %+v, %v; want %+v", got, err, rtp)
	}
	if got.Tag.String() != "caller" {
		t.Errorf("tag %q", got.Tag.String())
	}

	rtcp := Packet{RTCP: true, PayloadType: rtcpTypeRR, Seq: 1 << 20, SSRC: 7, SentAt: -1, Tag: NewTag("callee-longer")}
	b = rtcp.AppendRTCP(nil)
	if len(b) != 28 || b[0] != 0x80 || b[1] != 201 || b[3] != 6 {
		t.Fatalf("RTCP encoding %x", b)
	}
	got, err = ParsePacket(b)
	if err != nil || got != rtcp {
		t.Fatalf("ParsePacket(RTCP) = %+v, %v; want %+v", got, err, rtcp)
	}
	if got.Tag.String() != "callee-l" {
		t.Errorf("tag %q, want truncation to 8 bytes", got.Tag.String())
	}

	for _, bad := range [][]byte{nil, {0x80}, []byte("hello world, this is not RTP!"), make([]byte, 27), b[:27]} {
		if p, err := ParsePacket(bad); err == nil {
			t.Errorf("ParsePacket(%x) = %+v, want error", bad, p)
		}
	}
}

func TestQuantile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0, 1}, {0.5, 5}, {0.99, 10}, {1, 10}} {
		if got := Quantile(ds, c.q); got != c.want {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	if Quantile(nil, 0.5) != 0 {
		t.Error("Quantile(nil) != 0")
	}
}

// TestEndpointLoopback checks sequence accounting (wrap, loss, duplicates),
// invalid and wrong-kind datagrams on 127.0.0.1.
func TestEndpointLoopback(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lo := netip.AddrFrom4([4]byte{127, 0, 0, 1})
	rx, err := ListenEndpoint(ctx, "", lo, "rx")
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	raw, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo, 0)))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	// 65533, 65534, 65534 (dup), 0 (wrap), 2: 65535 and 1 are lost, and
	// 0..65532 were never sent but count as lost too (senders start at 0).
	seqs := []uint32{65533, 65534, 65534, 0, 2}
	for _, s := range seqs {
		p := Packet{Seq: s, SentAt: time.Now().UnixNano(), Tag: NewTag("raw")}
		if _, err := raw.WriteToUDPAddrPort(p.AppendRTP(nil, 100), rx.RTPAddr()); err != nil {
			t.Fatal(err)
		}
	}
	junk := [][]byte{[]byte("junk"), (Packet{RTCP: true, PayloadType: rtcpTypeRR, Tag: NewTag("raw")}).AppendRTCP(nil)}
	for _, j := range junk {
		if _, err := raw.WriteToUDPAddrPort(j, rx.RTPAddr()); err != nil {
			t.Fatal(err)
		}
	}
	// The RTCP socket gets one valid packet as the final marker.
	if _, err := raw.WriteToUDPAddrPort((Packet{RTCP: true, PayloadType: rtcpTypeRR, Tag: NewTag("raw")}).AppendRTCP(nil), rx.RTCPAddr()); err != nil {
		t.Fatal(err)
	}
	if err := rx.WaitRTCP(ctx, "raw", 1); err != nil {
		t.Fatal(err)
	}
	if err := rx.WaitRTP(ctx, "raw", len(seqs)); err != nil {
		t.Fatal(err)
	}
	// Loopback keeps order per socket, but the two sockets race: wait for
	// the junk on the RTP socket too.
	waitFor(ctx, t, func() bool { s := rx.RTPStats(); return s.Invalid+s.WrongKind == 2 })

	st := rx.RTPStats()
	src := st.Sources["raw"]
	if st.Packets != 5 || st.Bytes != 500 || st.Invalid != 1 || st.WrongKind != 1 {
		t.Errorf("stats %+v", st)
	}
	if src.Packets != 5 || src.Duplicates != 1 || src.Lost != 65533+2 || len(src.Latencies) != 5 {
		t.Errorf("source stats %+v", src)
	}
	if len(src.From) != 1 || src.From[0] != raw.LocalAddr().(*net.UDPAddr).AddrPort() {
		t.Errorf("From = %v", src.From)
	}
	if lat := src.Latency(0.99); lat <= 0 || lat > 5*time.Second {
		t.Errorf("p99 latency %v", lat)
	}
	if st.Sources["attacker"].Packets != 0 {
		t.Error("unknown tag has packets")
	}
	if err := rx.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// waitFor polls cond every 10 ms until it holds; it fails the test when
// ctx ends first.
func waitFor(ctx context.Context, t *testing.T, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("condition not met: %v", ctx.Err())
		case <-tick.C:
		}
	}
}
