package kernel

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestRawSendBatch sends datagrams from relay ports no socket is bound to
// through one raw socket: the receiver sees each from its own source
// port, intact (so the UDP checksum was right: the kernel checks it on
// receive), with the TOS byte asked for.
func TestRawSendBatch(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CAP_NET_RAW) for a raw socket")
	}
	raw, err := openRawSender()
	if err != nil {
		t.Skipf("raw sockets unavailable here: %v", err)
	}
	defer unix.Close(raw)
	rx, err := openUDP(netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(rx)
	if err := unix.SetsockoptInt(rx, unix.SOL_IP, unix.IP_RECVTOS, 1); err != nil {
		t.Fatal(err)
	}
	sa, err := unix.Getsockname(rx)
	if err != nil {
		t.Fatal(err)
	}
	dst := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*unix.SockaddrInet4).Port))

	payloads := [][]byte{[]byte("rtp-1"), {}, bytes.Repeat([]byte{0xab}, 1500), []byte("odd-length-payload")}
	b := NewRawSendBatch(len(payloads))
	for i, p := range payloads {
		src := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(26500+i))
		if !b.Add(src, dst, DSCPExpeditedForwarding<<2, p) {
			t.Fatalf("Add %d refused", i)
		}
	}
	if b.Add(netip.MustParseAddrPort("127.0.0.1:1"), dst, 0, nil) {
		t.Fatal("Add beyond the batch size accepted")
	}
	if n, err := b.Send(raw); err != nil || n != len(payloads) {
		t.Fatalf("sent %d of %d: %v", n, len(payloads), err)
	}
	buf, oob := make([]byte, 2048), make([]byte, 64)
	for i, want := range payloads {
		fds := []unix.PollFd{{Fd: int32(rx), Events: unix.POLLIN}}
		if n, err := unix.Poll(fds, int((5 * time.Second).Milliseconds())); err != nil || n == 0 {
			t.Fatalf("datagram %d never arrived (a bad UDP checksum is dropped on receive)", i)
		}
		n, oobn, _, from, err := unix.Recvmsg(rx, buf, oob, unix.MSG_DONTWAIT)
		if err != nil {
			t.Fatal(err)
		}
		if port := from.(*unix.SockaddrInet4).Port; port != 26500+i || !bytes.Equal(buf[:n], want) {
			t.Fatalf("datagram %d: %d bytes from port %d, want %d bytes from %d", i, n, port, len(want), 26500+i)
		}
		msgs, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil || len(msgs) != 1 || msgs[0].Header.Type != unix.IP_TOS || msgs[0].Data[0] != DSCPExpeditedForwarding<<2 {
			t.Fatalf("datagram %d: TOS control messages %+v (%v), want %#x", i, msgs, err, DSCPExpeditedForwarding<<2)
		}
	}
}

// TestUDPChecksum checks the checksum by the receiver's rule: the ones'
// complement sum over pseudo-header, header and payload is all ones.
func TestUDPChecksum(t *testing.T) {
	src, dst := [4]byte{192, 0, 2, 1}, [4]byte{198, 51, 100, 7}
	for _, payload := range [][]byte{nil, {1}, []byte("hello, relay"), bytes.Repeat([]byte{0xff}, 1473)} {
		hdr := make([]byte, 8)
		binary.BigEndian.PutUint16(hdr[0:], 40000)
		binary.BigEndian.PutUint16(hdr[2:], 3478)
		binary.BigEndian.PutUint16(hdr[4:], uint16(8+len(payload)))
		binary.BigEndian.PutUint16(hdr[6:], udpChecksum(src, dst, hdr, payload))
		var data []byte
		data = append(data, src[:]...)
		data = append(data, dst[:]...)
		data = append(data, 0, unix.IPPROTO_UDP, byte((8+len(payload))>>8), byte(8+len(payload)))
		data = append(data, hdr...)
		data = append(data, payload...)
		if len(data)%2 == 1 {
			data = append(data, 0)
		}
		var sum uint32
		for i := 0; i < len(data); i += 2 {
			sum += uint32(binary.BigEndian.Uint16(data[i:]))
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		if sum != 0xffff {
			t.Errorf("payload of %d bytes: checksum %#04x does not verify (sum %#x)", len(payload), binary.BigEndian.Uint16(hdr[6:]), sum)
		}
	}
}
