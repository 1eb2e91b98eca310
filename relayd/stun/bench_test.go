package stun

import (
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// BenchmarkBinding measures one Binding exchange: the packet handler alone
// (decode, checks, response build) for IPv4, IPv6 and RFC 3489 requests and
// for a malformed datagram, and a whole round trip through a served socket
// on loopback (client write, server read, handle and write, client read).
// allocs/op is the figure to watch: it must stay 0 for the handler.
func BenchmarkBinding(b *testing.B) {
	req := build(b, stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	for _, c := range []struct {
		name string
		pkt  []byte
		src  netip.AddrPort
	}{
		{"handle/ipv4", req, netip.MustParseAddrPort("203.0.113.7:40000")},
		{"handle/ipv6", req, netip.MustParseAddrPort("[2001:db8::7]:40000")},
		{"handle/classic", classicRequest, netip.MustParseAddrPort("203.0.113.7:40000")},
		{"handle/malformed", append(req[:len(req)-1:len(req)-1], req[len(req)-1]^1), netip.MustParseAddrPort("203.0.113.7:40000")},
	} {
		b.Run(c.name, func(b *testing.B) {
			h := newHandler(DefaultSoftware, true)
			b.ReportAllocs()
			b.SetBytes(int64(len(c.pkt)))
			for b.Loop() {
				h.handle(c.pkt, c.src)
			}
		})
	}
	b.Run("udp-roundtrip/ipv4", func(b *testing.B) {
		srv, err := New(Config{Listen: netip.MustParseAddrPort("127.0.0.1:0")})
		if err != nil {
			b.Fatal(err)
		}
		ctx := b.Context()
		done := make(chan error, 1)
		go func() { done <- srv.Serve(ctx) }()
		defer func() {
			_ = srv.Close()
			<-done
		}()
		conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(srv.Addr()))
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		if err := conn.SetReadDeadline(time.Now().Add(time.Minute)); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 2048)
		b.ReportAllocs()
		for b.Loop() {
			if _, err := conn.Write(req); err != nil {
				b.Fatal(err)
			}
			if _, err := conn.Read(buf); err != nil {
				b.Fatal(err)
			}
		}
	})
}
