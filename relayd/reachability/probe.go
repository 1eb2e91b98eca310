package reachability

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Socket is what a probe sends from and hears answers on: a relay port
// (channel.Manager.OpenEdgePort) or the STUN server's own socket
// (stun.Server.OpenProbe).
type Socket interface {
	Send(b []byte, to netip.AddrPort) error
	// Receive waits for the next datagram until ctx ends.
	Receive(ctx context.Context, b []byte) (int, netip.AddrPort, error)
	Port() int
	Close() error
}

// Timing bounds a probe: each request is sent Tries times, the first wait
// FirstWait long and each next twice the last (3 tries from 500 ms: at
// most 3.5 s per request).
type Timing struct {
	Tries     int
	FirstWait time.Duration
}

// DefaultTiming is RFC 8489's retransmission shape, cut short: a lost
// datagram is resent, a dropped one costs 3.5 s.
var DefaultTiming = Timing{Tries: 3, FirstWait: 500 * time.Millisecond}

// errNoAnswer: every try went unanswered.
var errNoAnswer = errors.New("no answer")

// transact sends a Binding request (with change, a CHANGE-REQUEST for the
// server's other address and port) from sock to server until an answer to
// it arrives, from whichever address, or the tries run out.
func transact(ctx context.Context, sock Socket, server netip.AddrPort, change bool, tm Timing) (answer, netip.AddrPort, error) {
	req, err := newRequest(change)
	if err != nil {
		return answer{}, netip.AddrPort{}, fmt.Errorf("build request: %w", err)
	}
	buf := make([]byte, 1500)
	wait := tm.FirstWait
	for range tm.Tries {
		if err := sock.Send(req.Raw, server); err != nil {
			return answer{}, netip.AddrPort{}, fmt.Errorf("send to %s: %w", server, err)
		}
		tryCtx, cancel := context.WithTimeout(ctx, wait)
		a, from, err := awaitAnswer(tryCtx, sock, buf, req.TransactionID)
		cancel()
		if err == nil || !errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
			return a, from, err
		}
		wait *= 2
	}
	return answer{}, netip.AddrPort{}, fmt.Errorf("%w after %d tries", errNoAnswer, tm.Tries)
}

// awaitAnswer reads until the answer to id arrives or ctx ends.
func awaitAnswer(ctx context.Context, sock Socket, buf []byte, id [12]byte) (answer, netip.AddrPort, error) {
	for {
		n, from, err := sock.Receive(ctx, buf)
		if err != nil {
			return answer{}, netip.AddrPort{}, err
		}
		if a, ok, err := parseAnswer(buf[:n], id); ok {
			// A dual-stack socket (the STUN server's) reports IPv4
			// sources as IPv4-mapped: compared with the server's
			// address they must be plain IPv4.
			return a, netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), err
		}
	}
}

// probePort finds out whether unsolicited datagrams from the Internet
// reach sock's port: it asks server, from that port, to answer from its
// other address and port (CHANGE-REQUEST). An answer from an address the
// port never sent to is proof; silence, where the plain request before
// and after it is answered, is proof of the opposite.
func probePort(ctx context.Context, sock Socket, server netip.AddrPort, tm Timing) PortResult {
	r := PortResult{Port: sock.Port()}
	first, _, err := transact(ctx, sock, server, false, tm)
	if err != nil {
		return r.cannotTell(causeNoAnswer, fmt.Sprintf("the STUN server %s did not answer a Binding request from port %d: %v", server, r.Port, err))
	}
	r.Mapped = first.mapped.String()
	if !hasSecondAddress(first.other, server) {
		return r.cannotTell(causeNoSecondAddress, fmt.Sprintf("the STUN server %s has no second address (its answer names no OTHER-ADDRESS or CHANGED-ADDRESS at another IP address), so it cannot send from an address port %d never sent to", server, r.Port))
	}
	r.From = first.other.String()
	portKept := first.mapped.Port() == uint16(r.Port)
	_, from, err := transact(ctx, sock, server, true, tm)
	switch {
	case err == nil && from.Addr() == server.Addr():
		return r.cannotTell(causeNoSecondAddress, fmt.Sprintf("the STUN server %s answered a change request from its own address: it does not honour CHANGE-REQUEST", server))
	case err == nil && !portKept:
		return r.cannotTell(causePortChanged, fmt.Sprintf("the NAT maps port %d to %s: an answer reaching that port says nothing about %d, the port peers are told", r.Port, first.mapped, r.Port))
	case err == nil:
		r.From = from.String()
		r.Verdict, r.Why = Reachable, fmt.Sprintf("a STUN answer from %s, an address port %d never sent to, arrived", from, r.Port)
		return r
	case errors.Is(err, errRefused):
		return r.cannotTell(causeNoSecondAddress, fmt.Sprintf("the STUN server %s refused the change request (%v)", server, err))
	case !errors.Is(err, errNoAnswer):
		return r.cannotTell(causeLocal, fmt.Sprintf("change request from port %d: %v", r.Port, err))
	}
	// Silence: make sure the path itself still works before blaming the
	// router.
	if _, _, err := transact(ctx, sock, server, false, tm); err != nil {
		return r.cannotTell(causeNoAnswer, fmt.Sprintf("the STUN server %s stopped answering port %d (%v): the network may be losing packets", server, r.Port, err))
	}
	r.Verdict = NotReachable
	r.Why = fmt.Sprintf("the STUN server answers port %d, but its answer from its second address %s never arrived (%d tries): the router or a firewall drops datagrams nobody asked for", r.Port, first.other, tm.Tries)
	if !portKept {
		r.Why += fmt.Sprintf("; the NAT also changes the port, to %d", first.mapped.Port())
	}
	return r
}

// hasSecondAddress reports whether other is a usable second address of
// server: another IP address (a change of port alone gets through NATs
// that filter by address only).
func hasSecondAddress(other, server netip.AddrPort) bool {
	a := other.Addr()
	return other.IsValid() && other.Port() != 0 && !a.IsUnspecified() && a != server.Addr()
}
