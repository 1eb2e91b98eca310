package conformance

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/kernel/internal/fastpathtest"
	"github.com/jnrelay/jnrelay/kernel/nft"
)

// Handover checks that no datagram is lost or duplicated when a leg goes
// from userspace to f while both peers stream: a userspace relay (the
// test's, relaying like relayd's worker: what arrives at one port from
// its peer goes out of the other port to the other peer) forwards the
// first datagrams, the leg is installed in the middle of the streams, and
// every datagram either side sent arrives exactly once, from the relay's
// port, whichever path took it. It does so rounds times, each with new
// peer sockets (a new leg, new conntrack entries for the userspace part)
// and the previous leg removed. Conntrack, where it runs, must not have
// failed to insert an entry nor dropped a datagram meanwhile
// (/proc/net/stat/nf_conntrack of the relay's namespace). The peers reach
// the relay at relayA and relayB (one address in the one-armed network).
// It closes f.
func Handover(t *testing.T, tp *fastpathtest.Topo, f Table, relayA, relayB netip.Addr, rounds int) {
	t.Helper()
	relayP := fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(netip.IPv4Unspecified(), 28000))
	relayQ := fastpathtest.UDP(t, tp.R, netip.AddrPortFrom(netip.IPv4Unspecified(), 28002))
	toP, toQ := netip.AddrPortFrom(relayA, 28000), netip.AddrPortFrom(relayB, 28002)
	if0, d0 := conntrackStats(t, tp.R)
	var prev *nft.Leg
	for round := range rounds {
		a := fastpathtest.UDP(t, tp.A, netip.AddrPortFrom(fastpathtest.PeerA, 0))
		b := fastpathtest.UDP(t, tp.B, netip.AddrPortFrom(fastpathtest.PeerB, 0))
		leg := nft.Leg{A: nft.Flow{Peer: fastpathtest.Addr(a), Port: 28000}, B: nft.Flow{Peer: fastpathtest.Addr(b), Port: 28002},
			LocalA: relayA, LocalB: relayB}
		handoverRound(t, tp, f, round, prev, leg, a, b, relayP, relayQ, toP, toQ)
		a.Close()
		b.Close()
		prev = &leg
	}
	if1, d1 := conntrackStats(t, tp.R)
	if if1 != if0 || d1 != d0 {
		t.Errorf("conntrack counted %d failed inserts and %d drops over %d hand-overs", if1-if0, d1-d0, rounds)
	}
	fastpathtest.In(t, tp.R, f.Close)
}

// HandoverRounds is how many hand-overs a test asks of Handover:
// JNRELAY_HANDOVER_ROUNDS, or a few (each takes about half a second).
func HandoverRounds() int {
	if n, err := strconv.Atoi(os.Getenv("JNRELAY_HANDOVER_ROUNDS")); err == nil && n > 0 {
		return n
	}
	return 4
}

// Stream shape: each peer sends handoverCount datagrams, one every
// handoverGap, and the leg is installed after handoverAt of them.
const (
	handoverCount = 200
	handoverAt    = 60
	handoverGap   = 500 * time.Microsecond
)

func handoverRound(t *testing.T, tp *fastpathtest.Topo, f Table, round int, prev *nft.Leg, leg nft.Leg,
	a, b, relayP, relayQ *net.UDPConn, toP, toQ netip.AddrPort) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The userspace relay, until the round ends.
	var relayed sync.WaitGroup
	for _, d := range []struct {
		in, out *net.UDPConn
		from    netip.AddrPort
		to      netip.AddrPort
	}{{relayP, relayQ, leg.A.Peer, leg.B.Peer}, {relayQ, relayP, leg.B.Peer, leg.A.Peer}} {
		relayed.Add(1)
		go func() {
			defer relayed.Done()
			buf := make([]byte, 2048)
			for ctx.Err() == nil {
				d.in.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				n, src, err := d.in.ReadFromUDPAddrPort(buf)
				if err != nil || src != d.from {
					continue // a timeout, or a previous round's straggler
				}
				d.out.WriteToUDPAddrPort(buf[:n], d.to)
			}
		}()
	}
	// The receivers: which sequence numbers arrived, how often, from where.
	type got struct {
		seen  [handoverCount]int
		wrong int
	}
	var atA, atB got
	var recv sync.WaitGroup
	for _, r := range []struct {
		c    *net.UDPConn
		from netip.AddrPort
		g    *got
	}{{a, toP, &atA}, {b, toQ, &atB}} {
		recv.Add(1)
		go func() {
			defer recv.Done()
			buf := make([]byte, 2048)
			r.c.SetReadDeadline(time.Now().Add(10 * time.Second)) // an upper bound; the last datagram ends it
			for {
				n, src, err := r.c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				seq := binary.BigEndian.Uint32(buf[:n])
				if src != r.from || n != 4 || seq >= handoverCount {
					r.g.wrong++
					continue
				}
				r.g.seen[seq]++
				if seq == handoverCount-1 {
					// The last one, by either path: wait a little for
					// one the other path still holds, then stop.
					r.c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				}
			}
		}()
	}
	// Both peers stream, each from its own goroutine, released together
	// at every tick so that their datagrams cross the relay at the same
	// time (on two CPUs where there are two); the leg goes in after
	// handoverAt datagrams.
	installed := make(chan error, 1)
	tick := time.NewTicker(handoverGap)
	defer tick.Stop()
	var gates [handoverCount]chan struct{}
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	sendErrs := make(chan error, 2)
	for _, p := range []struct {
		c  *net.UDPConn
		to netip.AddrPort
	}{{a, toP}, {b, toQ}} {
		go func() {
			var seq [4]byte
			for i := range handoverCount {
				<-gates[i]
				binary.BigEndian.PutUint32(seq[:], uint32(i))
				if _, err := p.c.WriteToUDPAddrPort(seq[:], p.to); err != nil {
					sendErrs <- err
					return
				}
			}
			sendErrs <- nil
		}()
	}
	for i := range handoverCount {
		close(gates[i])
		if i == handoverAt {
			go fastpathtest.In(t, tp.R, func() error {
				var remove []nft.Leg
				if prev != nil {
					remove = []nft.Leg{*prev}
				}
				installed <- f.Apply(remove, []nft.Leg{leg})
				return nil
			})
		}
		<-tick.C
	}
	for range 2 {
		if err := <-sendErrs; err != nil {
			t.Fatal(err)
		}
	}
	if err := <-installed; err != nil {
		t.Fatal(err)
	}
	recv.Wait()
	cancel()
	relayed.Wait()
	for _, r := range []struct {
		name string
		g    *got
	}{{"B->A", &atA}, {"A->B", &atB}} {
		var lost, dup []int
		for s, n := range r.g.seen {
			switch {
			case n == 0:
				lost = append(lost, s)
			case n > 1:
				dup = append(dup, s)
			}
		}
		if len(lost) > 0 || len(dup) > 0 || r.g.wrong > 0 {
			t.Errorf("round %d %s (leg installed after datagram %d of %d): lost %v, duplicated %v, %d from a wrong source",
				round, r.name, handoverAt, handoverCount, lost, dup, r.g.wrong)
		}
	}
}

// conntrackStats sums insert_failed and drop of /proc/net/stat/nf_conntrack
// over the CPUs in namespace ns (0, 0 without conntrack).
func conntrackStats(t *testing.T, ns string) (insertFailed, drop uint64) {
	t.Helper()
	out, err := exec.Command("ip", "netns", "exec", ns, "cat", "/proc/net/stat/nf_conntrack").Output()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return 0, 0
	}
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	head := strings.Fields(lines[0])
	for _, l := range lines[1:] {
		for i, v := range strings.Fields(l) {
			n, err := strconv.ParseUint(v, 16, 64)
			if err != nil || i >= len(head) {
				continue
			}
			switch head[i] {
			case "insert_failed":
				insertFailed += n
			case "drop":
				drop += n
			}
		}
	}
	return insertFailed, drop
}
