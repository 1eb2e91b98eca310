package channel

// transport is how a Manager's channels meet the network: which sockets
// receive the datagrams of a channel's ports, how a worker reads them and
// how forwarded datagrams leave. The relay rules — latching, the peer rule,
// sprayers, limits, expiry, counters (Channel.forwardable and latch.go) —
// sit above it and are written once; a transport only moves datagrams
// between the network and them.
//
// New chooses one transport from the Config and the Manager never asks
// again which one it has. Today there are two:
//
//   - socketTransport (sockets.go), the default: one socket per relay port,
//     with UDP GSO for hot flows, growing buffers and in-kernel shields.
//   - steeredTransport (steered.go): one socket per worker, fed for the
//     live channels' ports of the range by a BPF sk_lookup program,
//     sending through a raw socket, with shields in the program's map.
//
// A transport's constructor sets shared.shieldOps, its way to raise a
// port's in-kernel shield (shield.go). SocketsAuto settles on one of the
// two before newTransport (sockets_auto.go).
//
// Adding one (TURN allocations, IPv6 listen addresses, ...) is one new file
// with one type implementing this interface, and one case in
// newTransport. Its serve reads what a worker's poller reported, finds each
// datagram's side (shared.ports), passes it through c.forwardable under
// c.mu held for reading while !c.closed, and counts what it forwards with
// c.countQueued, c.countUnsent and c.forwarded. It calls nothing on the
// Manager.
//
// The methods are called in this order: startWorker once per worker (in
// New, before any channel), cover for the port range (in New and when
// Reconfigure moves it), then per channel openPorts, attach and at its end
// closePorts; stop before the workers stop and stopWorker after each
// worker's loop returned.
type transport interface {
	// startWorker opens worker w's own I/O, if any, registering it with
	// w.poller under tokens serve recognises. Workers start one after
	// another while the earlier ones already run: per-worker state lives
	// in a slice made whole by the transport's constructor (cfg.Workers
	// long), each worker writing only its own entry (w.id).
	startWorker(w *worker) error
	// serve handles a ready event of w's poller (any token but
	// kernel.WakeToken). Only w calls it, never concurrently with
	// itself for the same w.
	serve(w *worker, token uint64)
	// stopWorker releases what startWorker opened; w's loop has returned.
	stopWorker(w *worker)

	// cover makes the transport receive for ports first..last too; ports
	// covered before stay covered (channels of an old range live on).
	cover(first, last int) error
	// socketPerPort reports whether each relay port is a socket of its
	// own: what the nftables fast path matches on.
	socketPerPort() bool
	// stop releases transport-wide state before the workers stop.
	stop()

	// openPorts readies c's four ports (their side.port is set) for
	// traffic; on failure nothing stays open, and an error that wraps
	// EADDRINUSE makes the Manager try another block.
	openPorts(c *Channel) error
	// attach makes c's ports served by w, once they are in the port table.
	attach(w *worker, c *Channel) error
	// closePorts releases c's ports, crediting what the kernel dropped on
	// them to c's counters. The caller holds c.mu for writing.
	closePorts(c *Channel)
}

// newTransport is the transport cfg asks for, with one worker's I/O
// opened later per worker (startWorker); ports is how many relay ports
// the range holds (a socket transport sizes its buffers by it).
func newTransport(cfg Config, sh *shared, ports int) (transport, error) {
	if cfg.Sockets == SocketsSteered {
		return newSteeredTransport(cfg.Listen, sh, cfg.Workers)
	}
	return newSocketTransport(cfg.Listen, sh, ports, cfg.Workers, cfg.GSO), nil
}
