package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// The TURN part of the demo: two XMPP users fetch TURN credentials from
// the relay's component over XEP-0215 (urn:xmpp:extdisco:2), each
// allocates on relayd's built-in TURN server with pion's TURN client,
// and each sends packets through its allocation to the other's own
// address, which answers every one back through it. Both directions of
// both allocations go through relayd. (The other's relayed address would
// not do: relayd never relays between two of its own relay ports.)

const turnPacketSize = 172 // a 20 ms G.711 RTP packet

// turnUser is one side of the TURN call.
type turnUser struct {
	name    string
	service harness.ExternalService
	client  *pionturn.Client
	relay   net.PacketConn // the allocation
	own     *net.UDPConn   // the user's own address, which the other side sends to
	conns   []io.Closer

	// Results.
	sent, atPeer, back int
	rtts               []time.Duration
}

func (u *turnUser) close() {
	for _, c := range slices.Backward(u.conns) {
		c.Close()
	}
}

// turnCredentials asks the relay, as user, for its XEP-0215 services and
// returns the TURN-over-UDP one with its credentials.
func turnCredentials(ctx context.Context, srv *harness.XMPPServer, user, password string) (harness.ExternalService, error) {
	services, err := srv.Requester(user, password).ExternalServices(ctx, "", "turn")
	if err != nil {
		return harness.ExternalService{}, err
	}
	for _, s := range services {
		if s.Type == "turn" && s.Transport == "udp" && s.Username != "" && s.Password != "" {
			return s, nil
		}
	}
	return harness.ExternalService{}, fmt.Errorf("no TURN service over UDP with credentials for %s in %+v", user, services)
}

// allocate opens u's sockets on loopback and its allocation on the
// relay's TURN server.
func (u *turnUser) allocate(realm string) error {
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	own, err := net.ListenUDP("udp4", lo)
	if err != nil {
		return err
	}
	u.own = own
	u.conns = append(u.conns, own)
	conn, err := net.ListenUDP("udp4", lo)
	if err != nil {
		return err
	}
	u.conns = append(u.conns, conn)
	server := net.JoinHostPort(u.service.Host, strconv.Itoa(u.service.Port))
	u.client, err = pionturn.NewClient(&pionturn.ClientConfig{TURNServerAddr: server, STUNServerAddr: server,
		Username: u.service.Username, Password: u.service.Password, Realm: realm, Conn: conn})
	if err != nil {
		return fmt.Errorf("%s: TURN client: %w", u.name, err)
	}
	u.conns = append(u.conns, closerFunc(u.client.Close))
	if err := u.client.Listen(); err != nil {
		return fmt.Errorf("%s: TURN client: %w", u.name, err)
	}
	if u.relay, err = u.client.Allocate(); err != nil {
		return fmt.Errorf("%s: TURN allocation: %w", u.name, err)
	}
	u.conns = append(u.conns, u.relay)
	return nil
}

type closerFunc func()

func (f closerFunc) Close() error { f(); return nil }

// relayed is u's relayed address.
func (u *turnUser) relayed() netip.AddrPort { return u.relay.LocalAddr().(*net.UDPAddr).AddrPort() }

// ownAddr is u's own address.
func (u *turnUser) ownAddr() netip.AddrPort { return u.own.LocalAddr().(*net.UDPAddr).AddrPort() }

// answer sends every datagram arriving at u's own address back to where
// it came from, counting those from the relayed address want; it returns
// when the socket is closed or its deadline passes.
func (u *turnUser) answer(want netip.AddrPort, counted *int) {
	buf := make([]byte, 1500)
	for {
		n, from, err := u.own.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		if from != want {
			continue // nothing else sends here; ignore it if it does
		}
		*counted++
		if _, err := u.own.WriteToUDPAddrPort(buf[:n], from); err != nil {
			return
		}
	}
}

// exchange sends count packets every interval through u's allocation to
// peer's own address and reads peer's answers back through it, until the
// last answer or ctx ends (the caller bounds it).
func (u *turnUser) exchange(ctx context.Context, peer *turnUser, count int, interval time.Duration) error {
	to := net.UDPAddrFromAddrPort(peer.ownAddr())
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for u.back < count {
			n, from, err := u.relay.ReadFrom(buf)
			if err != nil {
				return
			}
			if n != turnPacketSize || from.String() != to.String() {
				continue
			}
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(buf[4:])))
			u.rtts = append(u.rtts, time.Since(sent))
			u.back++
		}
	}()
	pkt := make([]byte, turnPacketSize)
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for i := 0; i < count && ctx.Err() == nil; i++ {
		binary.BigEndian.PutUint32(pkt, uint32(i))
		binary.BigEndian.PutUint64(pkt[4:], uint64(time.Now().UnixNano()))
		if _, err := u.relay.WriteTo(pkt, to); err != nil {
			_ = u.relay.SetReadDeadline(time.Now())
			<-done
			return fmt.Errorf("%s: send through the allocation: %w", u.name, err)
		}
		u.sent++
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
	// The last answers are a round trip away; then stop reading (bounded,
	// for a lost answer) and wait for the reader, which owns the counts.
	wait := time.NewTimer(2 * time.Second)
	defer wait.Stop()
	select {
	case <-done:
		return nil
	case <-wait.C:
	case <-ctx.Done():
	}
	_ = u.relay.SetReadDeadline(time.Now())
	<-done
	return ctx.Err()
}

// turnCall is the demo's TURN call between alice and bob through relayd.
func turnCall(ctx context.Context, out io.Writer, srv *harness.XMPPServer, rd *harness.Relayd, realm string,
	users map[string]string, duration time.Duration) error {
	step := func(format string, args ...any) { fmt.Fprintf(out, "==> "+format+"\n", args...) }
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()

	alice, bob := &turnUser{name: "alice"}, &turnUser{name: "bob"}
	sides := []*turnUser{alice, bob}
	defer func() {
		for _, u := range sides {
			u.close()
		}
	}()
	step("alice and bob (python3-slixmpp) ask %s for TURN credentials over XEP-0215 (urn:xmpp:extdisco:2)", srv.ComponentDomain)
	for _, u := range sides {
		var err error
		if u.service, err = turnCredentials(wctx, srv, u.name, users[u.name]); err != nil {
			return err
		}
		s := u.service
		fmt.Fprintf(out, "    %-5s <service type='%s' transport='%s' host='%s' port='%d' username='%s' password='(%d characters)' expires='%s'/>\n",
			u.name, s.Type, s.Transport, s.Host, s.Port, s.Username, len(s.Password), s.Expires)
	}

	step("alice and bob allocate on relayd's TURN server (pion's TURN client, long-term credentials)")
	for _, u := range sides {
		if err := u.allocate(realm); err != nil {
			return err
		}
		fmt.Fprintf(out, "    %-5s relayed address %s (own address %s)\n", u.name, u.relayed(), u.ownAddr())
	}

	count := int(duration / rtpInterval)
	step("each sends %d packets of %d bytes every %s through its allocation to the other's own address, which answers each one", count, turnPacketSize, rtpInterval)
	var wg sync.WaitGroup
	for _, pair := range [][2]*turnUser{{alice, bob}, {bob, alice}} {
		u, peer := pair[0], pair[1]
		wg.Go(func() { peer.answer(u.relayed(), &u.atPeer) })
	}
	ectx, ecancel := context.WithTimeout(ctx, duration+5*time.Second)
	defer ecancel()
	errs := make(chan error, 2)
	for _, pair := range [][2]*turnUser{{alice, bob}, {bob, alice}} {
		go func() { errs <- pair[0].exchange(ectx, pair[1], count, rtpInterval) }()
	}
	err := errors.Join(<-errs, <-errs)
	st, serr := rd.Status(wctx) // while the allocations are live
	for _, u := range sides {
		u.own.Close() // ends the answering loops
	}
	wg.Wait()
	if err != nil {
		return err
	}

	fmt.Fprintln(out)
	fmt.Fprintln(out, "TURN call through relayd's built-in server (credentials from XEP-0215):")
	for _, pair := range [][2]*turnUser{{alice, bob}, {bob, alice}} {
		u, peer := pair[0], pair[1]
		fmt.Fprintf(out, "  %-5s -> %s -> %-5s %3d/%3d packets, answered back %3d/%3d, median round trip %s\n",
			u.name, u.relayed(), peer.name, u.atPeer, u.sent, u.back, u.sent, harness.Quantile(u.rtts, 0.5).Round(time.Microsecond))
	}
	if serr != nil || st.TURN == nil {
		return fmt.Errorf("relayd status: %v (turn %+v)", serr, st.TURN)
	}
	t := st.TURN
	want := uint64((alice.sent + bob.sent) * turnPacketSize)
	fmt.Fprintf(out, "  relayd's TURN counters (status): %d allocations live, %d in all, %d bytes to peers, %d from peers (sent: %d each way)\n",
		t.AllocationsLive, t.AllocationsTotal, t.BytesToPeers, t.BytesFromPeers, want)
	for _, u := range sides {
		if u.atPeer == 0 || u.back == 0 {
			return fmt.Errorf("nothing went through %s's allocation both ways (%d there, %d back)", u.name, u.atPeer, u.back)
		}
	}
	return nil
}
