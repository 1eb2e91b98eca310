package channel

import (
	"errors"
	"fmt"

	"github.com/jnrelay/jnrelay/kernel"
)

// SocketsMode is how relay ports are received (Config.Sockets).
type SocketsMode string

const (
	// SocketsPerPort opens a socket per relay port (sockets.go).
	SocketsPerPort SocketsMode = "per_port"
	// SocketsSteered serves the range from one socket per worker through
	// a BPF sk_lookup program (steered.go); New fails when the host
	// cannot steer.
	SocketsSteered SocketsMode = "steered"
	// SocketsAuto is steered where relayd can steer and that loses no
	// better fast path, else per-port (chooseSockets).
	SocketsAuto SocketsMode = "auto"
)

// SocketsChoice is the transport a Manager runs and, when it was chosen
// by SocketsAuto, why.
type SocketsChoice struct {
	Mode SocketsMode // per_port or steered
	Why  string      // for auto: the reason
}

// autoChoice is what chooseSockets decided: the transport, why, and the
// fast path it opened on the way (opened false: New opens it as usual).
type autoChoice struct {
	SocketsChoice
	fp     *fastPath
	opened bool
}

// pickSockets sets m.sockets from cfg.Sockets, deciding auto with
// chooseSockets (which may open the fast path on the way).
func (m *Manager) pickSockets(cfg Config, maxFlows int) (autoChoice, error) {
	switch cfg.Sockets {
	case "", SocketsPerPort:
		m.sockets = SocketsChoice{Mode: SocketsPerPort}
	case SocketsSteered:
		m.sockets = SocketsChoice{Mode: SocketsSteered}
	case SocketsAuto:
		m.sh.listen = cfg.Listen.Unmap() // what steering would match; New sets it again
		auto, err := chooseSockets(cfg, m.sh, &m.fpCounts, maxFlows)
		if err != nil {
			return autoChoice{}, err
		}
		m.sockets = auto.SocketsChoice
		m.sh.log.Info("channel.sockets auto: "+string(m.sockets.Mode), "why", m.sockets.Why)
		return auto, nil
	default:
		return autoChoice{}, fmt.Errorf("channel sockets %q: want per_port, steered or auto", cfg.Sockets)
	}
	return autoChoice{}, nil
}

// chooseSockets decides what SocketsAuto means here, in this order:
//
//  1. an IPv6 listen address: per-port (the steering program matches
//     IPv4);
//  2. the nftables fast path required (stateless rules or the
//     flowtable): per-port (its rules match a port's socket);
//  3. relayd cannot attach an sk_lookup program (CAP_BPF or
//     CAP_SYS_ADMIN, CAP_NET_ADMIN, Linux ≥ 5.9) or open a raw socket
//     (CAP_NET_RAW): per-port;
//  4. the fast path on auto: the eBPF one opened (through the broker or
//     by relayd), steered; if it cannot open but the flowtable or the
//     stateless nftables rules can, per-port with that, which forwards in
//     the kernel at a fifth of userspace's CPU or less where steered
//     ports relay in userspace at about three quarters; if none, steered;
//  5. otherwise (fast path off, eBPF required, or held off by a
//     relay-wide cap): steered.
//
// sh.listen must be set.
func chooseSockets(cfg Config, sh *shared, counts *fastPathCounts, maxFlows int) (autoChoice, error) {
	perPort := func(why string) (autoChoice, error) {
		return autoChoice{SocketsChoice: SocketsChoice{Mode: SocketsPerPort, Why: why}}, nil
	}
	steered := SocketsChoice{Mode: SocketsSteered, Why: "relayd can steer ports"}
	mode := fastPathUnder(cfg.FastPath, cfg.TotalKbps)
	if !cfg.Listen.Unmap().Is4() {
		return perPort("the listen address is IPv6; steered ports are IPv4 only")
	}
	if mode.isNftables() {
		return perPort(fmt.Sprintf("fast_path %s needs a socket per port", mode))
	}
	if err := kernel.SteeringAvailable(); err != nil {
		if !kernel.SteeringUnsupported(err) {
			return autoChoice{}, fmt.Errorf("channel.sockets auto: %w", err)
		}
		return perPort(fmt.Sprintf("relayd cannot attach a BPF sk_lookup program (needs CAP_BPF or CAP_SYS_ADMIN, CAP_NET_ADMIN, Linux ≥ 5.9): %v", err))
	}
	raw, err := kernel.OpenRawSender()
	if err != nil {
		return perPort(fmt.Sprintf("relayd cannot open a raw socket to send from relay ports (needs CAP_NET_RAW): %v", err))
	}
	raw.Close()
	if mode != FastPathAuto {
		return autoChoice{SocketsChoice: steered}, nil
	}
	fp, ebpfErr := openFastPath(sh, counts, FastPathEBPF, maxFlows, false)
	if ebpfErr == nil {
		steered.Why += ", and the eBPF fast path serves steered ports"
		return autoChoice{SocketsChoice: steered, fp: fp, opened: true}, nil
	}
	// What auto's fast path tries after eBPF, in its order: the
	// flowtable, then the stateless rules. Both need a socket per port.
	var nftErrs []error
	for _, nft := range []FastPathMode{FastPathFlowtable, FastPathNftables} {
		fp, err := openFastPath(sh, counts, nft, maxFlows, true)
		if err == nil {
			return autoChoice{SocketsChoice: SocketsChoice{Mode: SocketsPerPort,
				Why: fmt.Sprintf("the eBPF fast path is unavailable (%v) and the nftables one (%s), which needs a socket per port, forwards in the kernel", ebpfErr, nft)},
				fp: fp, opened: true}, nil
		}
		nftErrs = append(nftErrs, err)
	}
	sh.log.Info("in-kernel fast path unavailable, relaying in userspace", "err", errors.Join(append([]error{ebpfErr}, nftErrs...)...).Error())
	steered.Why += "; no in-kernel fast path is available"
	return autoChoice{SocketsChoice: steered, opened: true}, nil
}
