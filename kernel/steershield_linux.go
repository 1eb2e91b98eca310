package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/ebpf"
)

// Held and shielded ports. The port map holds, by local port, the ports
// the program steers; for a shielded one also the one source it accepts
// and a count of the datagrams from others, which the program hands to a
// sink socket whose classic filter drops them (no ICMP answer, no wake-up
// of a worker): the steering program's equivalent of AttachSourceFilter
// on a socket of its own.

// The port map's value: struct { __u32 ip4; __u32 port; __u64 drops; },
// the address and port as the program loads them from struct
// bpf_sk_lookup (network byte order bytes, read as host-order words);
// ip4 0 is a held port without a shield.
const (
	shieldIP4       = 0
	shieldPort      = 4
	shieldDrops     = 8
	shieldValueSize = 16
	// maxHeld bounds the port map: one entry per port of the range,
	// at most this many.
	maxHeld = 65536
)

// Hold makes the program steer port (of the range) to its socket,
// unshielded. The caller makes sure no other socket is bound to it: the
// program would take that socket's datagrams.
func (s *Steering) Hold(port int) error {
	var val [shieldValueSize]byte
	if err := ebpf.MapUpdate(s.ports, portKey(port), val[:], unix.BPF_ANY); err != nil {
		return fmt.Errorf("steering: hold port %d: %w", port, err)
	}
	return nil
}

// Release stops steering port: its datagrams take the ordinary lookup
// again. It is idempotent.
func (s *Steering) Release(port int) error {
	err := ebpf.MapDelete(s.ports, portKey(port))
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("steering: release port %d: %w", port, err)
	}
	return nil
}

// openSink opens the socket foreign datagrams of shielded ports are
// steered to, with a filter that drops everything, and puts it in the
// last slot of the socket map.
func (s *Steering) openSink(listen netip.Addr) error {
	fd, err := openUDP(netip.AddrPortFrom(listen, 0))
	if err != nil {
		return fmt.Errorf("steering: shield sink socket: %w", err)
	}
	s.sink = fd
	if err := attachDropAll(fd); err != nil {
		return fmt.Errorf("steering: shield sink: %w", err)
	}
	var key [4]byte
	var val [8]byte
	binary.NativeEndian.PutUint32(key[:], uint32(s.n))
	binary.NativeEndian.PutUint64(val[:], uint64(fd))
	if err := ebpf.MapUpdate(s.sockmap, key[:], val[:], unix.BPF_ANY); err != nil {
		return fmt.Errorf("steering: put the shield sink in the socket map: %w", err)
	}
	return nil
}

// Shield makes held port accept datagrams from src only, from now on:
// every other source's go to the sink and are counted (ShieldDrops).
// Shielding a shielded port replaces its source and starts its count
// again. src must be IPv4 and not 0.0.0.0.
func (s *Steering) Shield(port int, src netip.AddrPort) error {
	a := src.Addr().Unmap()
	if !a.Is4() || a.IsUnspecified() || src.Port() == 0 {
		return fmt.Errorf("steering: shield port %d: source %s is not an IPv4 address and port", port, src)
	}
	var val [shieldValueSize]byte
	ip := a.As4()
	binary.NativeEndian.PutUint32(val[shieldIP4:], binary.NativeEndian.Uint32(ip[:]))
	var be [2]byte
	binary.BigEndian.PutUint16(be[:], src.Port())
	binary.NativeEndian.PutUint32(val[shieldPort:], uint32(binary.NativeEndian.Uint16(be[:])))
	if err := ebpf.MapUpdate(s.ports, portKey(port), val[:], unix.BPF_EXIST); err != nil {
		return fmt.Errorf("steering: shield port %d for %s (held?): %w", port, src, err)
	}
	return nil
}

// ShieldDrops is how many foreign datagrams port's shield dropped since
// Shield (0 when it has none, or the port is not held).
func (s *Steering) ShieldDrops(port int) (uint64, error) {
	var val [shieldValueSize]byte
	err := ebpf.MapLookup(s.ports, portKey(port), val[:])
	if errors.Is(err, unix.ENOENT) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("steering: read port %d's shield: %w", port, err)
	}
	return binary.NativeEndian.Uint64(val[shieldDrops:]), nil
}

// Unshield lets every source reach held port's socket again. It is
// idempotent; a port not held stays so.
func (s *Steering) Unshield(port int) error {
	var val [shieldValueSize]byte
	err := ebpf.MapUpdate(s.ports, portKey(port), val[:], unix.BPF_EXIST)
	if err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("steering: unshield port %d: %w", port, err)
	}
	return nil
}

// SinkDrops is the sink socket's drop counter: every foreign datagram of
// a shielded port, of all ports together (a test's cross-check of the
// per-port counts).
func (s *Steering) SinkDrops() (uint32, error) { return Drops(s.sink) }

func portKey(port int) []byte {
	var key [4]byte
	binary.NativeEndian.PutUint32(key[:], uint32(port))
	return key[:]
}

// portMapEntries sizes the port map for ports lo..hi.
func portMapEntries(lo, hi int) int { return min(hi-lo+1, maxHeld) }
