package stun

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// A probe sends from the server's own socket and hears the answers the
// server would otherwise drop; requests to the server are still answered.
func TestProbeBorrowsTheSocket(t *testing.T) {
	lo := netip.MustParseAddr("127.0.0.1")
	srv := startServer(t, Config{Listen: netip.AddrPortFrom(lo, 0)})
	other := startServer(t, Config{Listen: netip.AddrPortFrom(lo, 0)})
	p, err := srv.OpenProbe()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.OpenProbe(); !errors.Is(err, ErrProbeBusy) {
		t.Fatalf("second probe: %v, want ErrProbeBusy", err)
	}
	if p.Port() != int(srv.Addr().Port()) {
		t.Fatalf("probe port %d, server %s", p.Port(), srv.Addr())
	}
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest)
	if err := p.Send(req.Raw, other.Addr()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	buf := make([]byte, 1500)
	n, from, err := p.Receive(ctx, buf)
	if err != nil {
		t.Fatal(err)
	}
	res := stun.Message{Raw: buf[:n]}
	var xa stun.XORMappedAddress
	if err := res.Decode(); err != nil || res.TransactionID != req.TransactionID || xa.GetFrom(&res) != nil {
		t.Fatalf("answer %v from %s: %v", res, from, err)
	}
	if from != other.Addr() || xa.Port != int(srv.Addr().Port()) {
		t.Fatalf("answer from %s mapping port %d, want from %s to the server's port %s", from, xa.Port, other.Addr(), srv.Addr())
	}
	// The server itself still answers while the probe is open.
	if _, err := dial(t, srv).Write(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw); err != nil {
		t.Fatal(err)
	}
	awaitStats(t, srv, func(st Stats) bool { return st.Responses == 1 })

	// Closed: responses only count as dropped, and the socket can be lent
	// anew.
	p.Close()
	if err := p.Send(req.Raw, other.Addr()); err != nil {
		t.Fatal(err)
	}
	awaitStats(t, srv, func(st Stats) bool { return st.Dropped[DropResponse] == 2 })
	p2, err := srv.OpenProbe()
	if err != nil {
		t.Fatalf("probe after close: %v", err)
	}
	p2.Close()
}
