package harness

import (
	"fmt"
	"net"
	"net/netip"

	pion "github.com/pion/stun/v4"
)

// STUNBinding sends one Binding request carrying FINGERPRINT over conn, a
// datagram socket connected to the STUN server, and returns the answer's
// XOR-MAPPED-ADDRESS. The answer must be a Binding success whose FINGERPRINT
// checks out. pion's client retransmits (RFC 5389's 7 tries from a 300 ms
// RTO, about 11 s in all) before it gives up, so a slow or busy server
// still gets its chance. conn is closed on return.
func STUNBinding(conn net.Conn) (netip.AddrPort, error) {
	client, err := pion.NewClient(conn)
	if err != nil {
		_ = conn.Close()
		return netip.AddrPort{}, fmt.Errorf("stun client: %w", err)
	}
	defer client.Close()
	var (
		mapped netip.AddrPort
		cbErr  error
	)
	req := pion.MustBuild(pion.TransactionID, pion.BindingRequest, pion.Fingerprint)
	if err := client.Do(req, func(e pion.Event) {
		mapped, cbErr = bindingAnswer(e)
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("binding request: %w", err)
	}
	if cbErr != nil {
		return netip.AddrPort{}, fmt.Errorf("binding answer: %w", cbErr)
	}
	return mapped, nil
}

// STUNBindingIn runs STUNBinding from local (port 0: any) inside network
// namespace ns ("" = the test process's own) to server.
func STUNBindingIn(ns string, local, server netip.AddrPort) (netip.AddrPort, error) {
	var conn *net.UDPConn
	if err := inNetns(ns, func() (err error) {
		conn, err = net.DialUDP("udp", udpAddrOrNil(local), net.UDPAddrFromAddrPort(server))
		return err
	}); err != nil {
		return netip.AddrPort{}, fmt.Errorf("dial %s from %s in netns %q: %w", server, local, ns, err)
	}
	return STUNBinding(conn)
}

// udpAddrOrNil lets the kernel pick the local address when none is given.
func udpAddrOrNil(ap netip.AddrPort) *net.UDPAddr {
	if !ap.IsValid() {
		return nil
	}
	return net.UDPAddrFromAddrPort(ap)
}

// bindingAnswer checks one transaction's outcome and extracts the mapped
// address from it.
func bindingAnswer(e pion.Event) (netip.AddrPort, error) {
	if e.Error != nil {
		return netip.AddrPort{}, e.Error
	}
	if e.Message.Type != pion.BindingSuccess {
		return netip.AddrPort{}, fmt.Errorf("answer is %s, not a Binding success", e.Message.Type)
	}
	if err := pion.Fingerprint.Check(e.Message); err != nil {
		return netip.AddrPort{}, fmt.Errorf("FINGERPRINT: %w", err)
	}
	var xa pion.XORMappedAddress
	if err := xa.GetFrom(e.Message); err != nil {
		return netip.AddrPort{}, fmt.Errorf("XOR-MAPPED-ADDRESS: %w", err)
	}
	ip, ok := netip.AddrFromSlice(xa.IP)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("bad mapped IP %v", xa.IP)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), nil
}
