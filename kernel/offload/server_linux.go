package offload

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
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
// stateless table (ModeNftables) or flowtable (ModeFlowtable), or the
// first of them the host runs, in that order (ModeAuto).
func OpenKernel(mode string, listen netip.Addr, maxFlows int) (KernelTable, error) {
	switch mode {
	case ModeEBPF:
		return openEBPF(listen, maxFlows)
	case ModeNftables:
		return openNftables(listen, false)
	case ModeFlowtable:
		return openNftables(listen, true)
	case ModeAuto:
		t, err := openEBPF(listen, maxFlows)
		if err == nil {
			return t, nil
		}
		t, ferr := openNftables(listen, true)
		if ferr == nil {
			return t, nil
		}
		t, nerr := openNftables(listen, false)
		if nerr == nil {
			return t, nil
		}
		return nil, fmt.Errorf("ebpf: %v; flowtable: %v; nftables: %w", err, ferr, nerr)
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
