package offload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// DefaultMaxFlows bounds a client's table when Config.MaxFlows is 0:
// one flow per UDP port.
const DefaultMaxFlows = 1 << 16

// DefaultRecheck is how often the broker checks installed legs again.
const DefaultRecheck = 2 * time.Second

// KernelTable is what the broker drives for its client: *tcfwd.Forwarder or
// *nft.Table.
type KernelTable interface {
	Apply(remove, add []nft.Leg) error
	Counters() (map[nft.Flow]nft.Counter, error)
	Close() error
	Name() string
}

// Config configures a Broker.
type Config struct {
	// UID is the only user whose connection is served (root is served
	// too: it could open the kernel objects itself).
	UID uint32
	// MaxFlows bounds the flows one table holds; 0 = DefaultMaxFlows.
	MaxFlows int
	// Recheck is how often installed legs are checked again, so a port
	// the client gave up leaves the kernel; 0 = DefaultRecheck.
	Recheck time.Duration
	Logger  *slog.Logger
	// Open opens the kernel table for mode; nil = kernel/tcfwd,
	// kernel/nft (OpenKernel).
	Open func(mode string, listen netip.Addr, maxFlows int) (KernelTable, error)
	// HostAddrs lists the host's IPv4 addresses; nil = the interfaces'.
	HostAddrs func() ([]netip.Addr, error)
}

// Broker serves one client at a time.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	refused atomic.Uint64
}

// New returns a broker for cfg.
func New(cfg Config) *Broker {
	if cfg.MaxFlows <= 0 {
		cfg.MaxFlows = DefaultMaxFlows
	}
	if cfg.Recheck <= 0 {
		cfg.Recheck = DefaultRecheck
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Open == nil {
		cfg.Open = OpenKernel
	}
	if cfg.HostAddrs == nil {
		cfg.HostAddrs = hostAddrs
	}
	return &Broker{cfg: cfg, log: cfg.Logger}
}

// Refused counts the connections and requests refused since start.
func (b *Broker) Refused() uint64 { return b.refused.Load() }

// Serve accepts clients on ln, one at a time, until ctx ends.
func (b *Broker) Serve(ctx context.Context, ln *net.UnixListener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	for {
		conn, err := ln.AcceptUnix()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("offload broker: accept: %w", err)
		}
		b.serveConn(ctx, conn)
	}
}

// serveConn serves one connection to its end.
func (b *Broker) serveConn(ctx context.Context, conn *net.UnixConn) {
	defer conn.Close()
	cred, err := peerCred(conn)
	if err != nil {
		b.log.Warn("offload broker: client credentials unreadable", "err", err.Error())
		return
	}
	if cred.Uid != b.cfg.UID && cred.Uid != 0 {
		b.refused.Add(1)
		b.log.Warn("offload broker: client refused: not relayd's user", "uid", cred.Uid, "pid", cred.Pid, "want_uid", b.cfg.UID)
		return
	}
	diag, err := openSockDiag()
	if err != nil {
		b.log.Error("offload broker: cannot check ports", "err", err.Error())
		return
	}
	defer diag.close()
	s := &session{b: b, conn: conn, uid: cred.Uid, pid: cred.Pid, receiver: diag.receiver}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	b.log.Info("offload broker: client connected", "uid", cred.Uid, "pid", cred.Pid)
	s.run()
	b.log.Info("offload broker: client gone, its table removed", "uid", cred.Uid, "pid", cred.Pid)
}

func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	raw, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) { cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) }); err != nil {
		return nil, err
	}
	return cred, serr
}

// OpenKernel opens kernel/tcfwd's forwarder (ModeEBPF), kernel/nft's
// table (ModeNftables), or the first of them the host runs (ModeAuto).
func OpenKernel(mode string, listen netip.Addr, maxFlows int) (KernelTable, error) {
	switch mode {
	case ModeEBPF:
		return openEBPF(listen, maxFlows)
	case ModeNftables:
		return openNftables(listen)
	case ModeAuto:
		t, err := openEBPF(listen, maxFlows)
		if err == nil {
			return t, nil
		}
		t, nerr := openNftables(listen)
		if nerr == nil {
			return t, nil
		}
		return nil, fmt.Errorf("ebpf: %v; nftables: %w", err, nerr)
	}
	return nil, fmt.Errorf("mode %q: %w", mode, ErrRefused)
}

// hostAddrs lists the host's IPv4 addresses.
func hostAddrs() ([]netip.Addr, error) {
	as, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("host addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range as {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && ip.Unmap().Is4() {
				out = append(out, ip.Unmap())
			}
		}
	}
	return out, nil
}

// session is one client's connection and table.
type session struct {
	b        *Broker
	conn     *net.UnixConn
	uid      uint32
	pid      int32
	receiver func(peer, local netip.AddrPort) (uint32, bool, error)

	mu       sync.Mutex // guards what follows against the recheck
	table    KernelTable
	v        *validator
	maxFlows int
	legs     map[nft.Leg]bool
}

// run reads requests until the client leaves or closes, then removes
// the table.
func (s *session) run() {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.recheckLoop(done)
	}()
	defer func() {
		close(done)
		wg.Wait()
		s.closeTable()
	}()
	for {
		b, err := readFrame(s.conn)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
				s.refuse("bad frame", err)
			}
			return
		}
		req, err := DecodeRequest(b)
		if err != nil {
			s.refuse("bad request", err)
			_ = writeFrame(s.conn, Response{V: Version, Err: wireError(err)})
			return
		}
		if !s.handle(req) {
			return
		}
	}
}

func (s *session) refuse(what string, err error) {
	s.b.refused.Add(1)
	s.b.log.Warn("offload broker: "+what+" refused", "uid", s.uid, "pid", s.pid, "err", err.Error())
}

// handle answers req; false ends the session.
func (s *session) handle(req Request) bool {
	switch req.Op {
	case OpOpen:
		name, err := s.open(req)
		return writeFrame(s.conn, Response{V: Version, Name: name, Err: wireError(err)}) == nil
	case OpApply:
		err := s.apply(req.Remove, req.Add)
		return writeFrame(s.conn, Response{V: Version, Err: wireError(err)}) == nil
	case OpCounters:
		return s.counters() == nil
	case OpClose:
		s.closeTable()
		_ = writeFrame(s.conn, Response{V: Version})
		return false
	}
	return false
}

func (s *session) open(req Request) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.table != nil {
		err := fmt.Errorf("a table is open already: %w", ErrRefused)
		s.refuse("open", err)
		return "", err
	}
	if req.MaxFlows > s.b.cfg.MaxFlows {
		err := fmt.Errorf("max_flows %d: at most %d: %w", req.MaxFlows, s.b.cfg.MaxFlows, ErrRefused)
		s.refuse("open", err)
		return "", err
	}
	t, err := s.b.cfg.Open(req.Mode, req.Listen, req.MaxFlows)
	if err != nil {
		return "", err
	}
	s.table, s.maxFlows, s.legs = t, req.MaxFlows, map[nft.Leg]bool{}
	s.v = &validator{uid: s.uid, listen: req.Listen, receiver: s.receiver}
	s.b.log.Info("offload broker: table open", "by", t.Name(), "listen", req.Listen.String(), "max_flows", req.MaxFlows, "uid", s.uid)
	return t.Name(), nil
}

// apply validates every added leg, then installs and removes in one
// call of the table; any refused leg refuses the whole request (relayd's
// fast path then tries leg by leg).
func (s *session) apply(remove, add []nft.Leg) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.table == nil {
		err := fmt.Errorf("apply before open: %w", ErrRefused)
		s.refuse("apply", err)
		return err
	}
	// Legs the broker never installed, or took out itself, are not in
	// the kernel: nothing to remove.
	var rm []nft.Leg
	gone := map[nft.Leg]bool{}
	for _, l := range remove {
		if s.legs[l] && !gone[l] {
			rm, gone[l] = append(rm, l), true
		}
	}
	after := len(s.legs) - len(rm)
	adding := map[nft.Leg]bool{}
	for _, l := range add {
		if !adding[l] && (!s.legs[l] || gone[l]) {
			adding[l] = true
			after++
		}
	}
	if after*2 > s.maxFlows {
		err := fmt.Errorf("%d legs would hold %d flows, more than the %d allowed: %w", after, after*2, s.maxFlows, ErrRefused)
		s.refuse("apply", err)
		return err
	}
	var addrs []netip.Addr
	if len(add) > 0 && s.v.listen.IsUnspecified() {
		var err error
		if addrs, err = s.b.cfg.HostAddrs(); err != nil {
			return err
		}
	}
	for _, l := range add {
		if err := s.v.check(l, addrs); err != nil {
			s.refuse("leg", err)
			return err
		}
	}
	if err := s.table.Apply(rm, add); err != nil {
		return err
	}
	for _, l := range rm {
		delete(s.legs, l)
	}
	for _, l := range add {
		s.legs[l] = true
	}
	return nil
}

// counters sends the table's counters in frames of at most
// maxCountersPerFrame.
func (s *session) counters() error {
	s.mu.Lock()
	var cs map[nft.Flow]nft.Counter
	err := fmt.Errorf("counters before open: %w", ErrRefused)
	if s.table != nil {
		cs, err = s.table.Counters()
	}
	s.mu.Unlock()
	if err != nil {
		return writeFrame(s.conn, Response{V: Version, Err: wireError(err)})
	}
	out := make([]FlowCounter, 0, min(len(cs), maxCountersPerFrame))
	for f, c := range cs {
		out = append(out, FlowCounter{Peer: f.Peer, Port: f.Port, Packets: c.Packets, Bytes: c.Bytes})
		if len(out) == maxCountersPerFrame {
			if err := writeFrame(s.conn, Response{V: Version, Counters: out, More: true}); err != nil {
				return err
			}
			out = out[:0]
		}
	}
	return writeFrame(s.conn, Response{V: Version, Counters: out})
}

// recheckLoop checks the installed legs every Recheck until done.
func (s *session) recheckLoop(done <-chan struct{}) {
	t := time.NewTicker(s.b.cfg.Recheck)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-t.C:
			s.recheck()
		}
	}
}

// recheck takes out of the kernel every leg whose ports the client no
// longer holds: a port it closed may be bound next by another program.
func (s *session) recheck() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.table == nil || len(s.legs) == 0 {
		return
	}
	var addrs []netip.Addr
	if s.v.listen.IsUnspecified() {
		var err error
		if addrs, err = s.b.cfg.HostAddrs(); err != nil {
			s.b.log.Warn("offload broker: recheck skipped", "err", err.Error())
			return
		}
	}
	var stale []nft.Leg
	for l := range s.legs {
		if err := s.v.check(l, addrs); err != nil {
			s.refuse("installed leg", err)
			stale = append(stale, l)
		}
	}
	if len(stale) == 0 {
		return
	}
	if err := s.table.Apply(stale, nil); err != nil {
		s.b.log.Error("offload broker: could not remove legs the client no longer holds; removing the table", "err", err.Error())
		s.closeTableLocked()
		return
	}
	for _, l := range stale {
		delete(s.legs, l)
	}
}

func (s *session) closeTable() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeTableLocked()
}

func (s *session) closeTableLocked() {
	if s.table == nil {
		return
	}
	if err := s.table.Close(); err != nil {
		s.b.log.Error("offload broker: could not remove the table", "by", s.table.Name(), "err", err.Error())
	}
	s.table, s.legs = nil, nil
}
