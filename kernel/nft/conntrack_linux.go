//go:build !nofastpath

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"syscall"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The flowtable variant's legs live in conntrack entries of one zone; this
// file is the little of ctnetlink it needs: dump the zone's entries with
// their counters (conntrack_filter_linux.go), delete one entry. Constants from
// linux/netfilter/nfnetlink_conntrack.h (x/sys/unix has none of them).
const (
	ctMsgNew    = 0 // IPCTNL_MSG_CT_NEW
	ctMsgGet    = 1 // IPCTNL_MSG_CT_GET
	ctMsgDelete = 2 // IPCTNL_MSG_CT_DELETE

	ctaTupleOrig     = 1  // CTA_TUPLE_ORIG
	ctaTupleReply    = 2  // CTA_TUPLE_REPLY
	ctaNATSrc        = 6  // CTA_NAT_SRC
	ctaTimeout       = 7  // CTA_TIMEOUT
	ctaCountersOrig  = 9  // CTA_COUNTERS_ORIG
	ctaCountersReply = 10 // CTA_COUNTERS_REPLY
	ctaID            = 12 // CTA_ID
	ctaNATDst        = 13 // CTA_NAT_DST
	ctaZone          = 18 // CTA_ZONE

	ctaTupleIP    = 1 // CTA_TUPLE_IP
	ctaTupleProto = 2 // CTA_TUPLE_PROTO
	ctaIPv4Src    = 1 // CTA_IP_V4_SRC
	ctaIPv4Dst    = 2 // CTA_IP_V4_DST
	ctaProtoNum   = 1 // CTA_PROTO_NUM
	ctaProtoSrc   = 2 // CTA_PROTO_SRC_PORT
	ctaProtoDst   = 3 // CTA_PROTO_DST_PORT
	ctaPackets    = 1 // CTA_COUNTERS_PACKETS
	ctaBytes      = 2 // CTA_COUNTERS_BYTES

	ctaNATMinIP   = 1 // CTA_NAT_V4_MINIP
	ctaNATMaxIP   = 2 // CTA_NAT_V4_MAXIP
	ctaNATProto   = 3 // CTA_NAT_PROTO
	ctaNATPortMin = 1 // CTA_PROTONAT_PORT_MIN
	ctaNATPortMax = 2 // CTA_PROTONAT_PORT_MAX
)

// ctTuple is one direction of a UDP conntrack entry.
type ctTuple struct {
	Src, Dst netip.AddrPort
}

// ctEntry is what Counters needs of a conntrack entry.
type ctEntry struct {
	ID          uint32
	Zone        uint16
	Status      uint32 // IPS_* bits
	Orig, Reply ctTuple
	// Counters per direction: zero unless net.netfilter.nf_conntrack_acct
	// was 1 when the entry was created.
	OrigCount, ReplyCount Counter
}

// conntrack is a ctnetlink socket in the namespace it was opened in.
type conntrack struct {
	conn ctConn
	// wholeTable: the kernel refused a filtered dump, so every dump asks
	// for the whole table (conntrack_filter_linux.go).
	wholeTable bool
	last       dumpStats
}

// ctConn is the part of a netlink socket conntrack uses (a fake in the
// fallback's unit test).
type ctConn interface {
	Execute(netlink.Message) ([]netlink.Message, error)
	Close() error
}

func openConntrack() (*conntrack, error) {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return nil, fmt.Errorf("open ctnetlink socket: %w", err)
	}
	return &conntrack{conn: c}, nil
}

func (c *conntrack) close() error { return c.conn.Close() }

// header builds an nfnetlink message of the conntrack subsystem: the
// nfgenmsg (family, version, resource id) and then attrs.
func ctMessage(msg uint16, flags netlink.HeaderFlags, attrs []byte) netlink.Message {
	return netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(unix.NFNL_SUBSYS_CTNETLINK<<8 | msg), Flags: netlink.Request | flags},
		Data:   append([]byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	}
}

// tupleInZone is the attributes that name one entry: a tuple of it (the
// kernel looks tuples up in both directions) and its zone.
func tupleInZone(zone uint16, tuple ctTuple) ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Nested(ctaTupleOrig, func(nae *netlink.AttributeEncoder) error {
		encodeTuple(nae, tuple)
		return nil
	})
	ae.Uint16(ctaZone, zone)
	return ae.Encode()
}

// get returns the entry of zone that has tuple in either direction; ok
// is false when there is none.
func (c *conntrack) get(zone uint16, tuple ctTuple) (e ctEntry, ok bool, err error) {
	b, err := tupleInZone(zone, tuple)
	if err != nil {
		return e, false, err
	}
	// The kernel marks its one reply multi-part with no end after it:
	// the acknowledgement ends the answer.
	msgs, err := c.conn.Execute(ctMessage(ctMsgGet, netlink.Acknowledge, b))
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOENT) {
		return e, false, nil
	}
	if err != nil {
		return e, false, fmt.Errorf("get conntrack entry %s->%s zone %d: %w", tuple.Src, tuple.Dst, zone, err)
	}
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		if e, ok, err = parseCtEntry(m.Data[4:]); err != nil || ok {
			return e, ok, err
		}
	}
	return e, false, nil
}

// remove deletes the entry of zone that has tuple in either direction
// (the kernel looks tuples up in both). An entry that is not there is not
// an error.
func (c *conntrack) remove(zone uint16, tuple ctTuple) error {
	b, err := tupleInZone(zone, tuple)
	if err != nil {
		return err
	}
	_, err = c.conn.Execute(ctMessage(ctMsgDelete, netlink.Acknowledge, b))
	if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("delete conntrack entry %s->%s zone %d: %w", tuple.Src, tuple.Dst, zone, err)
	}
	return nil
}

// createNAT adds a confirmed entry to zone for datagrams of orig, with
// their destination rewritten to dnat and then their source to snat, as
// the first datagram of orig would make it through the DNAT and SNAT
// rules; it expires after timeout seconds unless datagrams refresh it.
// An entry that holds one of its tuples already is not an error (a
// datagram made it first). A rewrite that is not set (the zero
// AddrPort) is left out.
func (c *conntrack) createNAT(zone uint16, orig ctTuple, dnat, snat netip.AddrPort, timeout uint32) error {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Nested(ctaTupleOrig, func(nae *netlink.AttributeEncoder) error {
		encodeTuple(nae, orig)
		return nil
	})
	// The reply as it would be without NAT: the kernel derives the
	// real one from it and the two NAT ranges.
	ae.Nested(ctaTupleReply, func(nae *netlink.AttributeEncoder) error {
		encodeTuple(nae, ctTuple{Src: orig.Dst, Dst: orig.Src})
		return nil
	})
	for _, n := range []struct {
		attr uint16
		to   netip.AddrPort
	}{{ctaNATDst, dnat}, {ctaNATSrc, snat}} {
		if !n.to.IsValid() {
			continue
		}
		ae.Nested(n.attr, func(nae *netlink.AttributeEncoder) error {
			a := n.to.Addr().Unmap().As4()
			nae.Bytes(ctaNATMinIP, a[:])
			nae.Bytes(ctaNATMaxIP, a[:])
			nae.Nested(ctaNATProto, func(pae *netlink.AttributeEncoder) error {
				pae.Uint16(ctaNATPortMin, n.to.Port())
				pae.Uint16(ctaNATPortMax, n.to.Port())
				return nil
			})
			return nil
		})
	}
	ae.Uint32(ctaTimeout, timeout)
	ae.Uint16(ctaZone, zone)
	b, err := ae.Encode()
	if err != nil {
		return err
	}
	_, err = c.conn.Execute(ctMessage(ctMsgNew, netlink.Create|netlink.Excl|netlink.Acknowledge, b))
	if err != nil && !errors.Is(err, os.ErrExist) && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("create conntrack entry %s->%s zone %d (to %s from %s): %w", orig.Src, orig.Dst, zone, dnat, snat, err)
	}
	return nil
}

func encodeTuple(ae *netlink.AttributeEncoder, t ctTuple) {
	ae.Nested(ctaTupleIP, func(nae *netlink.AttributeEncoder) error {
		s, d := t.Src.Addr().Unmap().As4(), t.Dst.Addr().Unmap().As4()
		nae.Bytes(ctaIPv4Src, s[:])
		nae.Bytes(ctaIPv4Dst, d[:])
		return nil
	})
	ae.Nested(ctaTupleProto, func(nae *netlink.AttributeEncoder) error {
		nae.Uint8(ctaProtoNum, unix.IPPROTO_UDP)
		nae.Uint16(ctaProtoSrc, t.Src.Port())
		nae.Uint16(ctaProtoDst, t.Dst.Port())
		return nil
	})
}

// parseCtEntry decodes the attributes of one entry; ok is false for what
// is not IPv4 UDP.
func parseCtEntry(b []byte) (e ctEntry, ok bool, err error) {
	ad, err := netlink.NewAttributeDecoder(b)
	if err != nil {
		return e, false, err
	}
	ad.ByteOrder = binary.BigEndian
	udp := [2]bool{}
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleOrig:
			ad.Nested(func(nad *netlink.AttributeDecoder) error { e.Orig, udp[0] = decodeTuple(nad); return nil })
		case ctaTupleReply:
			ad.Nested(func(nad *netlink.AttributeDecoder) error { e.Reply, udp[1] = decodeTuple(nad); return nil })
		case ctaID:
			e.ID = ad.Uint32()
		case ctaZone:
			e.Zone = ad.Uint16()
		case ctaStatus:
			e.Status = ad.Uint32()
		case ctaCountersOrig:
			ad.Nested(func(nad *netlink.AttributeDecoder) error { e.OrigCount = decodeCounters(nad); return nil })
		case ctaCountersReply:
			ad.Nested(func(nad *netlink.AttributeDecoder) error { e.ReplyCount = decodeCounters(nad); return nil })
		}
	}
	if err := ad.Err(); err != nil {
		return e, false, err
	}
	return e, udp[0] && udp[1], nil
}

// decodeTuple reads an IPv4 UDP tuple; ok is false for anything else.
func decodeTuple(ad *netlink.AttributeDecoder) (t ctTuple, ok bool) {
	var src, dst netip.Addr
	var sport, dport uint16
	var proto uint8
	for ad.Next() {
		switch ad.Type() {
		case ctaTupleIP:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					if b := nad.Bytes(); len(b) == 4 {
						if nad.Type() == ctaIPv4Src {
							src = netip.AddrFrom4([4]byte(b))
						} else if nad.Type() == ctaIPv4Dst {
							dst = netip.AddrFrom4([4]byte(b))
						}
					}
				}
				return nil
			})
		case ctaTupleProto:
			ad.Nested(func(nad *netlink.AttributeDecoder) error {
				for nad.Next() {
					switch nad.Type() {
					case ctaProtoNum:
						proto = nad.Uint8()
					case ctaProtoSrc:
						sport = nad.Uint16()
					case ctaProtoDst:
						dport = nad.Uint16()
					}
				}
				return nil
			})
		}
	}
	if proto != unix.IPPROTO_UDP || !src.IsValid() || !dst.IsValid() {
		return t, false
	}
	return ctTuple{Src: netip.AddrPortFrom(src, sport), Dst: netip.AddrPortFrom(dst, dport)}, true
}

func decodeCounters(ad *netlink.AttributeDecoder) (c Counter) {
	for ad.Next() {
		switch ad.Type() {
		case ctaPackets:
			c.Packets = ad.Uint64()
		case ctaBytes:
			c.Bytes = ad.Uint64()
		}
	}
	return c
}

// acctSysctl is conntrack accounting: without it entries carry no
// counters, and the flowtable's counter flag has nothing to add to.
const acctSysctl = "/proc/sys/net/netfilter/nf_conntrack_acct"

// ensureAccounting turns conntrack accounting on in the calling thread's
// network namespace if it is off (OpenWrt ships it on; it only makes
// conntrack count packets and bytes per entry), and says why it cannot.
func ensureAccounting() error {
	b, err := os.ReadFile(acctSysctl)
	if err != nil {
		return &UnavailableError{Reason: "conntrack_acct_off", Err: fmt.Errorf("read net.netfilter.nf_conntrack_acct: %w", err)}
	}
	if strings.TrimSpace(string(b)) == "1" {
		return nil
	}
	if err := os.WriteFile(acctSysctl, []byte("1\n"), 0); err != nil {
		return &UnavailableError{Reason: "conntrack_acct_off", Err: fmt.Errorf(
			"net.netfilter.nf_conntrack_acct is 0 and cannot be set (%w): the flowtable's per-leg counters need it (set it to 1)", err)}
	}
	return nil
}
