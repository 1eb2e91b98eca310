package kernel

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest"
)

func openT(t testing.TB, addr string) (int, netip.AddrPort) {
	t.Helper()
	fd, err := openUDP(netip.MustParseAddrPort(addr))
	if err != nil {
		t.Skipf("cannot open %s here: %v", addr, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	port, err := LocalPort(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fd, netip.AddrPortFrom(netip.MustParseAddrPort(addr).Addr(), uint16(port))
}

// waitReadable blocks until fd has a datagram (bounded), so tests await
// the event instead of sleeping.
func waitReadable(t testing.TB, fd int) {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 5000)
	if err != nil || n != 1 {
		t.Fatalf("fd %d not readable: n=%d err=%v", fd, n, err)
	}
}

// expectDatagrams receives len(want) datagrams on rx with recv (waiting
// for each batch, bounded) and checks that they are want, in order, each
// whole and from from.
func expectDatagrams(t *testing.T, recv *RecvBatch, rx int, from netip.AddrPort, want [][]byte) {
	t.Helper()
	var got [][]byte
	for len(got) < len(want) {
		waitReadable(t, rx)
		n, err := recv.Recv(rx)
		if err != nil {
			t.Fatal(err)
		}
		if n > recv.Size() {
			t.Fatalf("received %d > batch size", n)
		}
		for i := range n {
			p, src, trunc := recv.Packet(i)
			if src != from || trunc {
				t.Fatalf("datagram %d from %s (want %s) truncated=%v", len(got), src, from, trunc)
			}
			got = append(got, bytes.Clone(p))
		}
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("datagram %d: %d bytes %.8q, want %d bytes %.8q", i, len(got[i]), got[i], len(want[i]), want[i])
		}
	}
}

func TestBatchRoundTrip(t *testing.T) {
	for _, family := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(family, func(t *testing.T) {
			tx, txAddr := openT(t, family)
			rx, rxAddr := openT(t, family)
			send := NewSendBatch(8)
			send.Reset(rxAddr)
			var want [][]byte
			for i := range 5 {
				p := fmt.Appendf(nil, "datagram-%d", i)
				want = append(want, p)
				if !send.Add(p) {
					t.Fatal("batch full too early")
				}
			}
			send.Add(nil) // zero-length datagrams are legal
			want = append(want, []byte{})
			if n, err := send.Send(tx); err != nil || n != 6 {
				t.Fatalf("sent %d: %v", n, err)
			}
			if send.Len() != 0 {
				t.Fatal("batch not emptied by Send")
			}
			recv := NewRecvBatch(4, 64)
			expectDatagrams(t, recv, rx, txAddr, want)
			if n, err := recv.Recv(rx); n != 0 || err != nil {
				t.Fatalf("empty socket: %d, %v", n, err)
			}
		})
	}
}

func TestTruncationDetected(t *testing.T) {
	tx, _ := openT(t, "127.0.0.1:0")
	rx, rxAddr := openT(t, "127.0.0.1:0")
	const max = 1500
	send := NewSendBatch(2)
	send.Reset(rxAddr)
	full, over := bytes.Repeat([]byte{1}, max), bytes.Repeat([]byte{2}, max+100)
	send.Add(full)
	send.Add(over)
	if _, err := send.Send(tx); err != nil {
		t.Fatal(err)
	}
	recv := NewRecvBatch(2, max+1)
	var flags []bool
	for len(flags) < 2 {
		waitReadable(t, rx)
		n, err := recv.Recv(rx)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			p, _, trunc := recv.Packet(i)
			flags = append(flags, trunc)
			if !trunc && len(p) != max {
				t.Fatalf("len %d", len(p))
			}
		}
	}
	if flags[0] || !flags[1] {
		t.Fatalf("truncation flags %v, want [false true]", flags)
	}
}

func TestPollerReportsTokensAndWakes(t *testing.T) {
	p, err := NewPoller()
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tx, _ := openT(t, "127.0.0.1:0")
	rx, rxAddr := openT(t, "127.0.0.1:0")
	if err := p.Add(rx, 0xdead_beef_0000_0042); err != nil {
		t.Fatal(err)
	}
	send := NewSendBatch(1)
	send.Reset(rxAddr)
	send.Add([]byte("x"))
	if _, err := send.Send(tx); err != nil {
		t.Fatal(err)
	}
	events := make([]Event, 4)
	n, err := p.Wait(events, -1)
	if err != nil || n != 1 || events[0].Token != 0xdead_beef_0000_0042 || events[0].Flags&unix.EPOLLIN == 0 {
		t.Fatalf("wait: n=%d err=%v events=%v", n, err, events[:n])
	}
	// Level-triggered: still ready until read.
	if n, _ := p.Wait(events, 0); n != 1 {
		t.Fatalf("level-triggered event gone before the read: %d", n)
	}
	NewRecvBatch(1, 16).Recv(rx)
	if n, _ := p.Wait(events, 0); n != 0 {
		t.Fatalf("%d events after draining", n)
	}
	if err := p.Wake(); err != nil {
		t.Fatal(err)
	}
	n, err = p.Wait(events, -1)
	if err != nil || n != 1 || events[0].Token != WakeToken {
		t.Fatalf("wake: n=%d err=%v %v", n, err, events[:n])
	}
	if n, _ := p.Wait(events, 0); n != 0 {
		t.Fatal("wake event not reset")
	}
	if err := p.Remove(rx); err != nil {
		t.Fatal(err)
	}
}

func TestOpenUDPRejectsBusyPort(t *testing.T) {
	_, addr := openT(t, "127.0.0.1:0")
	if fd, err := openUDP(addr); err == nil {
		unix.Close(fd)
		t.Fatalf("second bind of %s succeeded", addr)
	}
}

func TestRecvSendAllocateNothing(t *testing.T) {
	tx, _ := openT(t, "127.0.0.1:0")
	rx, rxAddr := openT(t, "127.0.0.1:0")
	send := NewSendBatch(4)
	recv := NewRecvBatch(4, 1501)
	payload := make([]byte, 172)
	allocs := testing.AllocsPerRun(200, func() {
		send.Reset(rxAddr)
		send.Add(payload)
		send.Send(tx)
		waitReadable(t, rx)
		n, _ := recv.Recv(rx)
		for i := range n {
			recv.Packet(i)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round trip", allocs)
	}
}

// TestSendSegmented: runs of equal-size datagrams go out as one message
// each (a shorter one ends a run; a zero-length one and a larger one
// start new messages), and the receiver gets every datagram, in order,
// with its own size and bytes. Loopback has checksum offload, so the
// kernel segments them.
func TestSendSegmented(t *testing.T) {
	if !Detect().GSO {
		t.Skip("this kernel has no UDP_SEGMENT")
	}
	for _, family := range []string{"127.0.0.1:0", "[::1]:0"} {
		t.Run(family, func(t *testing.T) {
			tx, txAddr := openT(t, family)
			rx, rxAddr := openT(t, family)
			sizes := []int{172, 172, 172, 60, 172, 172, 0, 300, 300, 1400}
			wantMsgs := 5 // [172 172 172 60] [172 172] [0] [300 300] [1400]
			send := NewSendBatch(len(sizes))
			send.Reset(rxAddr)
			var want [][]byte
			for i, n := range sizes {
				p := bytes.Repeat([]byte{byte('a' + i)}, n)
				want = append(want, p)
				send.Add(p)
			}
			sent, msgs, err := send.SendSegmented(tx)
			if err != nil || sent != len(sizes) || msgs != wantMsgs {
				t.Fatalf("sent %d datagrams in %d messages (%v), want %d in %d", sent, msgs, err, len(sizes), wantMsgs)
			}
			expectDatagrams(t, NewRecvBatch(4, 2048), rx, txAddr, want)
		})
	}
}

// TestSendSegmentedFallsBack: when the kernel refuses segmentation — here
// because a datagram with its headers exceeds the link's MTU (1618 bytes
// on fastpathtest's 1600-byte links: EMSGSIZE); kernels before 6.11 also
// refuse it toward devices without checksum offload (EIO) — the batch
// goes out one datagram a message (fragmented, as Send would) and the
// caller learns it.
func TestSendSegmentedFallsBack(t *testing.T) {
	if !Detect().GSO {
		t.Skip("this kernel has no UDP_SEGMENT")
	}
	tp := fastpathtest.New(t, "jngso")
	var tx int
	fastpathtest.In(t, tp.A, func() (err error) {
		tx, err = openUDP(netip.AddrPortFrom(fastpathtest.PeerA, 5000))
		return err
	})
	t.Cleanup(func() { unix.Close(tx) })
	rx := fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 6000))
	send := NewSendBatch(4)
	send.Reset(fastpathtest.Addr(rx))
	const size = 1590
	for i := range 4 {
		send.Add(bytes.Repeat([]byte{byte('a' + i)}, size))
	}
	sent, msgs, err := send.SendSegmented(tx)
	if !errors.Is(err, ErrNoSegmentation) || sent != 4 || msgs != 4 {
		t.Fatalf("sent %d in %d messages, err %v; want 4 in 4 and ErrNoSegmentation", sent, msgs, err)
	}
	for i := range 4 {
		fastpathtest.Expect(t, rx, bytes.Repeat([]byte{byte('a' + i)}, size), netip.AddrPortFrom(fastpathtest.PeerA, 5000))
	}
}
