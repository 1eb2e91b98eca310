package channel

import (
	"fmt"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel"
)

// benchMaxPPS is the benchmarks' packet ceiling: above their rates.
const benchMaxPPS = 1_000_000

// BenchmarkRelayPingPong measures one relayed datagram each way per
// iteration over loopback (172-byte payload, the size of a 20 ms G.711
// RTP packet). allocs/op covers the whole process, so it shows that the
// forwarding path allocates nothing per packet.
func BenchmarkRelayPingPong(b *testing.B) {
	// The ping-pong runs far above the default packet ceiling (a call's
	// rate); a ceiling it never meets is still checked on every datagram.
	m, err := New(Config{Listen: loopback, Settings: Settings{PortMin: testPortMin, PortMax: testPortMax, Expire: time.Hour, LatchGrace: time.Second, MaxPPS: benchMaxPPS}})
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

// BenchmarkHotFlow relays bursts of 16 datagrams of 172 bytes one way
// (one sendmmsg, then the receiver drains them), with UDP GSO on and off
// for the relay's sends. Sender and receiver are this process too and do
// the same work in both: the difference between the two is the relay's.
// cpu-ns/relayed-packet is the whole process's CPU time (getrusage).
func BenchmarkHotFlow(b *testing.B) {
	if !kernel.Detect().GSO {
		b.Skip("this kernel has no UDP_SEGMENT")
	}
	for _, gso := range []bool{false, true} {
		b.Run(fmt.Sprintf("gso=%v", gso), func(b *testing.B) {
			// One channel's range: the sockets get the large buffers of a
			// small relay, so a burst is never dropped for room.
			m, err := New(Config{Listen: loopback, GSO: gso, Settings: Settings{PortMin: testPortMin, PortMax: testPortMin + 3, Expire: time.Hour, LatchGrace: time.Second, MaxPPS: benchMaxPPS}})
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			info, a, bb, _, _ := call(b, m)
			const burst = 16
			send := kernel.NewSendBatch(burst)
			recv := kernel.NewRecvBatch(burst, 2048)
			payload := make([]byte, 172)
			sendFD := sysFD(b, a.conn)
			// The receiver parks in the Go runtime's poller (a blocking
			// poll(2) would hold one of the two Ps the relay's worker
			// needs, and measure the scheduler instead).
			rc, err := bb.conn.SyscallConn()
			if err != nil {
				b.Fatal(err)
			}
			var got int
			var recvErr error
			drain := func(fd uintptr) bool {
				var n int
				n, recvErr = recv.Recv(int(fd))
				got += n
				return got >= burst || recvErr != nil
			}
			bb.conn.SetReadDeadline(time.Now().Add(time.Minute))
			var before, after unix.Rusage
			unix.Getrusage(unix.RUSAGE_SELF, &before)
			b.ResetTimer()
			for range b.N {
				send.Reset(addrPort(info.LocalPort))
				for range burst {
					send.Add(payload)
				}
				if n, err := send.Send(sendFD); err != nil || n != burst {
					b.Fatalf("sent %d: %v", n, err)
				}
				got = 0
				if err := rc.Read(drain); err != nil || recvErr != nil || got != burst {
					s := liveStats(b, m, info.ID)
					b.Fatalf("relay delivered %d of %d (%v, %v; relay forwarded %v, dropped %v)", got, burst, err, recvErr, s.Packets, s.Dropped)
				}
			}
			b.StopTimer()
			unix.Getrusage(unix.RUSAGE_SELF, &after)
			cpu := time.Duration(after.Utime.Nano()+after.Stime.Nano()-before.Utime.Nano()-before.Stime.Nano()) * time.Nanosecond
			packets := float64(burst * b.N)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/packets, "ns/relayed-packet")
			b.ReportMetric(float64(cpu.Nanoseconds())/packets, "cpu-ns/relayed-packet")
			b.ReportMetric(float64(m.Totals().Segmented)/packets, "segmented-share")
		})
	}
}

// sysFD is c's descriptor, for the kernel package's batch calls (the
// connection stays open and owns it).
func sysFD(b *testing.B, c *net.UDPConn) int {
	rc, err := c.SyscallConn()
	if err != nil {
		b.Fatal(err)
	}
	var fd int
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// BenchmarkAllocate opens and kills a channel per iteration: per port a
// socket to bind, or with steered ports a bind to check the port is free
// and a port-map entry to hold it.
func BenchmarkAllocate(b *testing.B) {
	for _, sockets := range []SocketsMode{SocketsPerPort, SocketsSteered} {
		b.Run(string(sockets), func(b *testing.B) {
			m, err := New(Config{Listen: loopback, Sockets: sockets, Settings: Settings{PortMin: testPortMin, PortMax: testPortMax, Expire: time.Hour}})
			if kernel.SteeringUnsupported(err) {
				b.Skipf("steering unavailable here: %v", err)
			}
			if err != nil {
				b.Fatal(err)
			}
			defer m.Close()
			b.ReportAllocs()
			for range b.N {
				info, err := m.Allocate()
				if err != nil {
					b.Fatal(err)
				}
				m.Kill(info.ID)
			}
		})
	}
}
