package main

import (
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/tests/bench/load"
)

// TestAccount feeds the sink synthetic received messages (no sockets): a
// good packet is counted once, a duplicate, a misrouted and a malformed
// one are told apart, and none of it allocates.
func TestAccount(t *testing.T) {
	cfg := &config{side: 0, flows: 3, hosts: [][4]byte{{198, 51, 100, 1}, {198, 51, 100, 2}},
		rate: 50, peerRate: 50, size: 80, duration: time.Second, batch: 4, sendBatch: 4}
	for i := range cfg.flows {
		cfg.targets = append(cfg.targets, rawSockaddr([4]byte{203, 0, 113, 100}, uint16(20000+4*i)))
	}
	g := &gen{cfg: cfg, h: len(cfg.hosts), socks: []int{-1, -1}, ovfl: make([]uint32, 2)}
	g.prepare()

	// deliver puts a packet of the other side's flow into slot 0 as if
	// recvmmsg had received it on socket j, for destination dst, from src.
	deliver := func(flow, seq uint32, j int, dst [4]byte, src unix.RawSockaddrInet4, size int) {
		p := load.Packet{Side: 1, Flow: flow, Seq: seq, SendNs: time.Now().UnixNano(), SSRC: load.SSRC(1, flow)}
		b := g.rbufs[0]
		for i := load.HeaderSize; i < size; i++ {
			b[i] = load.FillByte
		}
		load.Encode(b, &p)
		g.rmsgs[0].Len = uint32(size)
		g.rmsgs[0].Hdr.Flags = 0
		g.rnames[0] = src
		ctl := g.rctrl[0]
		clear(ctl)
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		(*unix.Inet4Pktinfo)(unsafe.Pointer(&ctl[unix.CmsgLen(0)])).Addr = dst
		g.rmsgs[0].Hdr.SetControllen(unix.CmsgSpace(unix.SizeofInet4Pktinfo))
		g.account(j, 0, time.Now().UnixNano())
	}
	// Flow 2 lives on socket 1 (two hosts per socket), host index 0.
	deliver(2, 7, 1, cfg.hosts[0], cfg.targets[2], 80)
	deliver(2, 7, 1, cfg.hosts[0], cfg.targets[2], 80)  // duplicate
	deliver(2, 3, 1, cfg.hosts[0], cfg.targets[2], 80)  // reordered
	deliver(1, 0, 0, cfg.hosts[0], cfg.targets[1], 80)  // wrong destination address
	deliver(0, 0, 0, cfg.hosts[0], cfg.targets[1], 80)  // wrong source
	deliver(0, 0, 0, cfg.hosts[0], cfg.targets[0], 79)  // wrong size
	deliver(0, 99, 0, cfg.hosts[0], cfg.targets[0], 80) // beyond the schedule
	r := &g.res
	if r.Received != 2 || r.Duplicates != 1 || r.Reordered != 1 || r.Misrouted != 2 || r.Bad != 2 {
		t.Fatalf("received %d dup %d reordered %d misrouted %d bad %d, want 2 1 1 2 2",
			r.Received, r.Duplicates, r.Reordered, r.Misrouted, r.Bad)
	}
	if n := testing.AllocsPerRun(100, func() { deliver(2, 7, 1, cfg.hosts[0], cfg.targets[2], 80) }); n != 0 {
		t.Errorf("accounting a packet allocates %v times", n)
	}
}
