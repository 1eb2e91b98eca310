package nft

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/jnrelay/jnrelay/kernel"
)

// DefaultTable is the name of the table relayd owns.
const DefaultTable = "jnrelay"

// DefaultZone is the conntrack zone of the flowtable variant's legs.
const DefaultZone = 19022

// MaxPayload is the largest UDP payload the kernel forwards; larger
// datagrams fall to the relay's socket, which drops and counts them
// (kernel.MaxDatagram, the limit userspace applies too).
const MaxPayload = kernel.MaxDatagram

// headerBytes is what the kernel's byte counter includes beyond the UDP
// payload: the IPv4 header (the rules take only the 20-byte one) and the
// UDP header.
const headerBytes = 20 + 8

// Flow is one direction of an offloaded leg as the kernel matches it:
// datagrams from Peer to the relay's port Port.
type Flow struct {
	Peer netip.AddrPort
	Port uint16
}

// Leg is a pair of relay ports forwarded to each other. Datagrams from
// A.Peer to A.Port go to B.Peer from LocalB:B.Port, and datagrams from
// B.Peer to B.Port go to A.Peer from LocalA:A.Port. LocalA and LocalB are
// the relay's addresses facing each peer (what it sends from in
// userspace too).
type Leg struct {
	A, B           Flow
	LocalA, LocalB netip.Addr
}

// Counter is what the kernel forwarded for one Flow.
type Counter struct {
	Packets uint64
	Bytes   uint64 // UDP payload bytes, as userspace counts them
}

// UnavailableError says why a fast path (this one or kernel/tcfwd's)
// cannot run on this host.
type UnavailableError struct {
	Reason string // short and stable: "no_cap_net_admin", "no_nf_tables", "ip_forward_off", "br_netfilter", "table_busy"; flowtable: "no_flowtable", "conntrack_acct_off", "no_ctnetlink"
	Err    error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("fast path unavailable (%s): %v", e.Reason, e.Err)
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// ErrConflict is returned by Apply for a leg whose rewrite key another
// installed leg already uses (the same two peer sockets on two channels).
var ErrConflict = errors.New("flow already offloaded for another leg")

// Config configures Open.
type Config struct {
	// Table is the table's name; empty = DefaultTable.
	Table string
	// Listen is the address relay ports are bound to. When it is a
	// specific IPv4 address the rules match it; when it is unspecified
	// they match any of the host's own addresses (a fib lookup).
	Listen netip.Addr
	// Flowtable builds the flowtable variant: legs as conntrack entries
	// with DNAT and SNAT, offloaded to an nftables flowtable (hardware
	// offload when the devices take it). Open fails with reason
	// "no_flowtable" on a kernel without nf_flow_table.
	Flowtable bool
	// Zone is the flowtable variant's conntrack zone; 0 = DefaultZone.
	Zone uint16
	// noFlowtable leaves the flowtable out of the flowtable variant (its
	// NAT, zone and counters alone), for tests on kernels without
	// nf_flow_table.
	noFlowtable bool
	// ignoreBrNetfilter opens the table where br_netfilter would lose
	// what it forwards, for the test that shows the loss.
	ignoreBrNetfilter bool
}

// Valid reports why the kernel cannot take leg, or nil.
func (l Leg) Valid() error {
	for _, a := range []netip.Addr{l.A.Peer.Addr(), l.B.Peer.Addr(), l.LocalA, l.LocalB} {
		if !a.IsValid() || !a.Unmap().Is4() {
			return fmt.Errorf("leg %d<->%d: address %s: the fast path handles IPv4 only", l.A.Port, l.B.Port, a)
		}
	}
	if l.A.Port == 0 || l.B.Port == 0 || l.A.Port == l.B.Port {
		return fmt.Errorf("leg %d<->%d: invalid ports", l.A.Port, l.B.Port)
	}
	return nil
}

// CheckForwarding refuses a fast path when the kernel would not forward
// the rewritten datagrams (nftables routes them as forwarded ones; the
// eBPF program's route lookup requires forwarding too). The sysctl is
// read in the calling thread's network namespace, where the fast path is
// opened.
func CheckForwarding() error {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_forward")
	if err != nil {
		return &UnavailableError{Reason: "ip_forward_off", Err: fmt.Errorf("read net.ipv4.ip_forward: %w", err)}
	}
	if strings.TrimSpace(string(b)) != "1" {
		return &UnavailableError{Reason: "ip_forward_off", Err: errors.New("net.ipv4.ip_forward is 0: the kernel would not forward rewritten datagrams (set it to 1 to use the fast path)")}
	}
	return nil
}
