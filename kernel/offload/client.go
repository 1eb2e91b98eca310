package offload

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// requestTimeout bounds one exchange with the broker. Opening attaches
// a program to every interface, or loads an nftables table: well under
// it. A broker serving another client keeps a new one waiting in its
// backlog; that also ends here.
const requestTimeout = 15 * time.Second

// Table is a fast path table held by the broker at the other end of a
// connection: the broker's kernel/tcfwd forwarder or kernel/nft table.
// It has their methods and errors (nft.ErrConflict,
// *nft.UnavailableError), plus ErrRefused for what the broker does not
// allow and ErrBrokerGone once the connection is lost. Its methods are
// safe for concurrent use.
type Table struct {
	mu     sync.Mutex
	conn   *net.UnixConn
	name   string
	broken error // set once the connection failed; every call returns it
}

// Open connects to the broker at socket and opens a table for mode
// (ModeEBPF, ModeNftables, ModeAuto) on the listen address, holding at
// most maxFlows flows.
func Open(ctx context.Context, socket, mode string, listen netip.Addr, maxFlows int) (*Table, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	c, err := dial(ctx, socket)
	if err != nil {
		return nil, fmt.Errorf("offload broker %s: %w", socket, err)
	}
	t := &Table{conn: c.(*net.UnixConn)}
	var resp Response
	if err := t.exchange(Request{V: Version, Op: OpOpen, Mode: mode, Listen: listen.Unmap(), MaxFlows: maxFlows}, &resp); err != nil {
		c.Close()
		return nil, err
	}
	if err := resp.Err.err(); err != nil {
		c.Close()
		return nil, err
	}
	t.name = resp.Name + " (through the offload broker)"
	return t, nil
}

// brokerStartWait is how long Open waits for a broker that is not
// listening yet: under procd (OpenWrt) the broker's instance starts
// beside relayd's, not before it. systemd's socket exists before relayd.
const brokerStartWait = 3 * time.Second

// dial connects to socket, waiting up to brokerStartWait while nothing
// listens there.
func dial(ctx context.Context, socket string) (net.Conn, error) {
	var d net.Dialer
	deadline := time.Now().Add(brokerStartWait)
	for {
		c, err := d.DialContext(ctx, "unix", socket)
		if err == nil || !(errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED)) || time.Now().After(deadline) {
			return c, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// exchange sends req and reads one response into resp. A failure of the
// connection breaks the table for good.
func (t *Table) exchange(req Request, resp *Response) error {
	if t.broken != nil {
		return t.broken
	}
	err := t.conn.SetDeadline(time.Now().Add(requestTimeout))
	if err == nil {
		err = writeFrame(t.conn, req)
	}
	if err == nil {
		err = t.read(resp)
	}
	if err != nil {
		t.broken = fmt.Errorf("%w: %v", ErrBrokerGone, err)
		t.conn.Close()
		return t.broken
	}
	return nil
}

func (t *Table) read(resp *Response) error {
	b, err := readFrame(t.conn)
	if err != nil {
		return err
	}
	*resp = Response{}
	if err := decodeStrict(b, resp); err != nil {
		return fmt.Errorf("malformed response: %w", err)
	}
	if resp.V != Version {
		return fmt.Errorf("protocol version %d, want %d", resp.V, Version)
	}
	return nil
}

// Apply removes and installs legs in one transaction of the broker's
// table.
func (t *Table) Apply(remove, add []nft.Leg) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var resp Response
	if err := t.exchange(Request{V: Version, Op: OpApply, Remove: remove, Add: add}, &resp); err != nil {
		return err
	}
	return resp.Err.err()
}

// Counters reads what the kernel forwarded per installed flow.
func (t *Table) Counters() (map[nft.Flow]nft.Counter, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var resp Response
	if err := t.exchange(Request{V: Version, Op: OpCounters}, &resp); err != nil {
		return nil, err
	}
	out := map[nft.Flow]nft.Counter{}
	for {
		if err := resp.Err.err(); err != nil {
			return nil, err
		}
		for _, c := range resp.Counters {
			out[nft.Flow{Peer: c.Peer, Port: c.Port}] = nft.Counter{Packets: c.Packets, Bytes: c.Bytes}
		}
		if !resp.More {
			return out, nil
		}
		if err := t.read(&resp); err != nil {
			t.broken = fmt.Errorf("%w: %v", ErrBrokerGone, err)
			t.conn.Close()
			return nil, t.broken
		}
	}
}

// Close asks the broker to remove the table and waits until it has:
// every leg is back in userspace when it returns.
func (t *Table) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.broken != nil {
		// The broker removes the table of a client that left.
		return nil
	}
	var resp Response
	err := t.exchange(Request{V: Version, Op: OpClose}, &resp)
	if err == nil {
		err = resp.Err.err()
	}
	t.conn.Close()
	t.broken = fmt.Errorf("%w: closed", ErrBrokerGone)
	return err
}

// Name names the table for logs.
func (t *Table) Name() string { return t.name }
