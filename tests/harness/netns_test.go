package harness

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLANMedia builds relay/b/c, sends RTP and RTCP from b to c over the
// bridge through sockets opened with ListenUDP, and checks exact stats,
// then that LinkDown drops traffic and LinkUp restores it.
func TestLANMedia(t *testing.T) {
	t.Parallel()
	lan := NewLAN(t, "jnt", "relay", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	if got, want := lan.Addr("c"), netip.MustParseAddr("203.0.113.3"); got != want {
		t.Fatalf("Addr(c) = %v, want %v", got, want)
	}
	for _, h := range lan.Hosts() {
		if _, err := os.Stat(filepath.Join(netnsDir, lan.NS(h))); err != nil {
			t.Fatalf("namespace of %s: %v", h, err)
		}
	}
	if out, err := lan.Command(ctx, "b", "ip", "-br", "addr", "show", "dev", "eth0").CombinedOutput(); err != nil {
		t.Fatalf("ip netns exec: %v: %s", err, out)
	}

	b, err := lan.ListenEndpoint(ctx, "b", "b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c, err := lan.ListenEndpoint(ctx, "c", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.RTPAddr().Addr() != lan.Addr("c") {
		t.Fatalf("c RTP socket on %v", c.RTPAddr())
	}

	const n, m = 50, 10
	if _, err := b.SendRTP(ctx, c.RTPAddr(), Pace{Count: n, Interval: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SendRTCP(ctx, c.RTCPAddr(), Pace{Count: m}); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRTP(ctx, "b", n); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitRTCP(ctx, "b", m); err != nil {
		t.Fatal(err)
	}
	rtp, rtcp := c.RTPStats(), c.RTCPStats()
	src := rtp.Sources["b"]
	if rtp.Packets != n || rtp.Bytes != n*DefaultRTPSize || rtp.Invalid+rtp.WrongKind != 0 || len(rtp.Sources) != 1 {
		t.Errorf("RTP stats %+v", rtp)
	}
	if src.Packets != n || src.Lost != 0 || src.Duplicates != 0 || len(src.From) != 1 || src.From[0] != b.RTPAddr() {
		t.Errorf("RTP source stats %+v (b is %v)", src, b.RTPAddr())
	}
	if rtcp.Packets != m || rtcp.Bytes != m*28 || rtcp.Sources["b"].Lost != 0 || rtcp.Sources["b"].From[0] != b.RTCPAddr() {
		t.Errorf("RTCP stats %+v", rtcp)
	}
	t.Logf("b->c latency median %v p99 %v", src.Latency(0.5), src.Latency(0.99))

	// While c's link is down, b's packets are dropped at the bridge.
	if err := lan.LinkDown("c"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.SendRTP(ctx, c.RTPAddr(), Pace{Count: 5}); err != nil {
		t.Fatal(err)
	}
	if err := lan.LinkUp("c"); err != nil {
		t.Fatal(err)
	}
	// Carrier returns asynchronously: keep sending until one more arrives.
	sendCtx, stopSending := context.WithCancel(ctx)
	sent := make(chan int)
	go func() {
		k, _ := b.SendRTP(sendCtx, c.RTPAddr(), Pace{Count: 1000, Interval: 5 * time.Millisecond})
		sent <- k
	}()
	err = c.WaitRTP(ctx, "b", n+1)
	stopSending()
	k := <-sent
	if err != nil {
		t.Fatal(err)
	}
	src = c.RTPStats().Sources["b"]
	if src.Lost < 5 || src.Duplicates != 0 || src.Packets > n+k {
		t.Errorf("after link down/up: %+v (sent %d more)", src, k)
	}
}
