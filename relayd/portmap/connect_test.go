package portmap

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// pcpRouter is a router's PCP/NAT-PMP server on 127.0.0.1:5351 that
// answers every PCP MAP request with one result code and NAT-PMP's
// external-address request with 198.51.100.9, counting the NAT-PMP
// requests it gets.
type pcpRouter struct {
	conn   *net.UDPConn
	natpmp atomic.Int32
}

func startPCPRouter(t *testing.T, result byte) *pcpRouter {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: pcpPort})
	if err != nil {
		t.Skipf("127.0.0.1:%d is taken: %v", pcpPort, err)
	}
	r := &pcpRouter{conn: conn}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 1200)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			switch {
			case n >= 2 && buf[0] == 0: // NAT-PMP
				r.natpmp.Add(1)
				if buf[1] == 0 { // external address
					ans := make([]byte, 12)
					ans[1] = 128
					binary.BigEndian.PutUint32(ans[4:], 1)
					copy(ans[8:], []byte{198, 51, 100, 9})
					conn.WriteToUDPAddrPort(ans, from)
				}
			case n == pcpMAPSize+4 || n == pcpMAPSize: // PCP MAP (with PREFER_FAILURE)
				ans := pcpAnswer(buf[:pcpMAPSize], result, 0, 0, netip.IPv4Unspecified())
				if result == pcpUnsuppVersion {
					ans[0] = 0 // what a NAT-PMP server answers a PCP request
				}
				conn.WriteToUDPAddrPort(ans, from)
			}
		}
	}()
	return r
}

func loopbackMapper() *Mapper {
	m := testMapper(40000, 40099)
	m.cfg.Protocols = []Protocol{PCP, NATPMP} // no UPnP: its discovery is multicast
	m.cfg.Gateway = func() (netip.Addr, netip.Addr, error) {
		return netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.1"), nil
	}
	return m
}

// TestPCPRefusalSkipsNATPMP: a router whose PCP server refuses is not
// asked over NAT-PMP (the same service, which on miniupnpd scans every
// external port before refusing); one that answers PCP with "unsupported
// version", a NAT-PMP server, is.
func TestPCPRefusalSkipsNATPMP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t.Run("refused", func(t *testing.T) {
		r := startPCPRouter(t, pcpNotAuthorized)
		c, st := loopbackMapper().connect(ctx)
		if c != nil || !strings.Contains(st.Error, "(result 2)") || !strings.Contains(st.Error, "nat-pmp: not asked") {
			t.Fatalf("client %v, state %+v", c, st)
		}
		if n := r.natpmp.Load(); n != 0 {
			t.Fatalf("%d NAT-PMP requests after PCP refused", n)
		}
	})
	t.Run("nat-pmp-server", func(t *testing.T) {
		r := startPCPRouter(t, pcpUnsuppVersion)
		c, st := loopbackMapper().connect(ctx)
		if c == nil || c.protocol() != NATPMP {
			t.Fatalf("client %v, state %+v: want NAT-PMP", c, st)
		}
		if r.natpmp.Load() == 0 {
			t.Fatal("NAT-PMP was not asked")
		}
	})
	var refusal pcpRefusal
	if !errors.As(pcpRefusal{errRefused}, &refusal) || !errors.Is(refusal, errRefused) {
		t.Fatal("a PCP refusal is not a refusal")
	}
}
