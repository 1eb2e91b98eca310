package channel

import (
	"testing"
	"time"
)

// BenchmarkRelayPingPong measures one relayed datagram each way per
// iteration over loopback (172-byte payload, the size of a 20 ms G.711
// RTP packet). allocs/op covers the whole process, so it shows that the
// forwarding path allocates nothing per packet.
func BenchmarkRelayPingPong(b *testing.B) {
	m, err := New(Config{Listen: loopback, PortMin: testPortMin, PortMax: testPortMax, Expire: time.Hour, LatchGrace: time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	info, a, bb, _, _ := call(b, m)
	p := info.LocalPort
	payload := make([]byte, 172)
	buf := make([]byte, 2048)
	dstA, dstB := addrPort(p), addrPort(p+2)
	a.conn.SetReadDeadline(time.Time{})
	bb.conn.SetReadDeadline(time.Time{})
	b.ReportAllocs()
	b.SetBytes(2 * int64(len(payload)))
	b.ResetTimer()
	for range b.N {
		if _, err := a.conn.WriteToUDPAddrPort(payload, dstA); err != nil {
			b.Fatal(err)
		}
		if _, _, err := bb.conn.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := bb.conn.WriteToUDPAddrPort(payload, dstB); err != nil {
			b.Fatal(err)
		}
		if _, _, err := a.conn.ReadFromUDPAddrPort(buf); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	s := liveStats(b, m, info.ID)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(2*b.N), "ns/relayed-packet")
	if s.Packets[LocalToRemote] < uint64(b.N) {
		b.Fatalf("relay forwarded %d of %d", s.Packets[LocalToRemote], b.N)
	}
}
