package portmap

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
)

// DefaultGateway returns the IPv4 default route's gateway and the local
// address relayd reaches it from. The routes are read from
// /proc/net/route (netlink's route dump would cost the binary ~120 kB);
// the source address is the one the kernel picks for a UDP socket
// connected to the gateway (connecting sends nothing).
func DefaultGateway() (gateway, local netip.Addr, err error) {
	f, err := os.Open("/proc/net/route")
	if err != nil {
		return gateway, local, fmt.Errorf("read routes: %w", err)
	}
	defer f.Close()
	gateway, err = parseDefaultRoute(io.LimitReader(f, 1<<20))
	if err != nil {
		return gateway, local, err
	}
	conn, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(gateway, pcpPort)))
	if err != nil {
		return gateway, local, fmt.Errorf("route to gateway %s: %w", gateway, err)
	}
	defer conn.Close()
	local = conn.LocalAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
	return gateway, local, nil
}

// routeFlagGateway is RTF_GATEWAY: the route goes through a gateway.
const routeFlagGateway = 0x2

// parseDefaultRoute finds the first default route with a gateway in the
// text of /proc/net/route (addresses in hex, in the host's byte order,
// which is little-endian on every platform relayd is built for but MIPS
// big-endian: the kernel prints the 32-bit value as stored, so the bytes
// are read back in native order).
func parseDefaultRoute(r io.Reader) (netip.Addr, error) {
	sc := bufio.NewScanner(r)
	sc.Scan() // header
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 8 || f[1] != "00000000" || f[7] != "00000000" {
			continue // not a default route (destination and mask 0)
		}
		var flags uint32
		if _, err := fmt.Sscanf(f[3], "%x", &flags); err != nil || flags&routeFlagGateway == 0 {
			continue
		}
		raw, err := hex.DecodeString(f[2])
		if err != nil || len(raw) != 4 {
			continue
		}
		// The kernel printed a native-order uint32 with %08X.
		v := binary.BigEndian.Uint32(raw)
		var b [4]byte
		binary.NativeEndian.PutUint32(b[:], v)
		if gw := netip.AddrFrom4(b); !gw.IsUnspecified() {
			return gw, nil
		}
	}
	return netip.Addr{}, errors.New("no IPv4 default route with a gateway")
}
