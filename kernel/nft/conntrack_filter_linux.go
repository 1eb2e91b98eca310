//go:build !nofastpath

package nft

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// A dump of the conntrack table asks the kernel to leave out what relayd
// does not want, so that a busy router's thousands of NAT entries are not
// serialised, copied and parsed about once a second. What each kernel
// does with the request's attributes (net/netfilter/nf_conntrack_netlink.c):
//
//	nfgen_family AF_INET         every kernel: IPv4 entries only
//	CTA_STATUS + CTA_STATUS_MASK Linux ≥ 5.15: entries with these status bits
//	CTA_ZONE                     Linux ≥ 6.8: entries of this zone
//
// An older kernel ignores what it does not know (CTA_ZONE without
// CTA_FILTER, CTA_STATUS in a dump, an attribute past its CTA_MAX) and
// returns more, never less, so the same test is applied to every entry
// here: the kernel filter saves work, it never decides what relayd sees.
// A kernel that refuses the request instead (EOPNOTSUPP: no
// CONFIG_NF_CONNTRACK_ZONES) gets whole-table dumps from then on.
//
// Why not a ct mark (CTA_MARK + CTA_MARK_MASK, filtered by every kernel
// since 3.x): relayd would have to claim a bit of the mark that mwan3,
// pbr, SQM's DSCP marking and operators' own rules also write, and a rule
// that overwrites it would hide relayd's entries from its own dumps —
// counters that stop, entries that are never deleted — which no test
// here could notice. The NAT status bits are set by the kernel's NAT
// alone (ctnetlink refuses to change them), so that filter can only
// return too much.

// Conntrack status bits (linux/netfilter/nf_conntrack_common.h).
const (
	ipsSrcNAT = 1 << 4 // IPS_SRC_NAT: the source was rewritten
	ipsDstNAT = 1 << 5 // IPS_DST_NAT: the destination was rewritten

	ctaStatus     = 3  // CTA_STATUS
	ctaStatusMask = 26 // CTA_STATUS_MASK
)

// ctQuery is the entries a dump wants: those of one zone and, with nated,
// only those both DNATed and SNATed — a leg's entry once its rules ran
// (one that went into the zone but found no map element any more, its leg
// removed between the chains, has neither and forwards nothing).
type ctQuery struct {
	zone  uint16
	nated bool
}

// match is the query's test on an entry's zone and status bits, applied
// whatever the kernel did.
func (q ctQuery) match(zone uint16, status uint32) bool {
	if zone != q.zone {
		return false
	}
	return !q.nated || status&(ipsSrcNAT|ipsDstNAT) == ipsSrcNAT|ipsDstNAT
}

// attrs are the request attributes that ask the kernel for the query.
func (q ctQuery) attrs() ([]byte, error) {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Uint16(ctaZone, q.zone)
	if q.nated {
		ae.Uint32(ctaStatus, ipsSrcNAT|ipsDstNAT)
		ae.Uint32(ctaStatusMask, ipsSrcNAT|ipsDstNAT)
	}
	return ae.Encode()
}

// dumpStats is what the last dump cost and kept, for the tests and the
// benchmark to see what the kernel filtered.
type dumpStats struct {
	returned int // entries the kernel sent
	kept     int // of those, the ones the query wants
}

// dump returns the IPv4 UDP entries q wants, asking the kernel to filter
// them unless it refused to before.
func (c *conntrack) dump(q ctQuery) ([]ctEntry, error) {
	if !c.wholeTable {
		attrs, err := q.attrs()
		if err != nil {
			return nil, err
		}
		msgs, err := c.conn.Execute(ctMessage(ctMsgGet, netlink.Dump, attrs))
		if err == nil {
			return c.keep(msgs, q)
		}
		if !filterRefused(err) {
			return nil, fmt.Errorf("dump conntrack entries of zone %d: %w", q.zone, err)
		}
		c.wholeTable = true
	}
	msgs, err := c.conn.Execute(ctMessage(ctMsgGet, netlink.Dump, nil))
	if err != nil {
		return nil, fmt.Errorf("dump conntrack entries: %w", err)
	}
	return c.keep(msgs, q)
}

// filterRefused says whether a dump failed because of its filter (no
// zones in this kernel, or an attribute it validates and rejects) rather
// than because ctnetlink itself is missing or not allowed.
func filterRefused(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EINVAL)
}

// keep parses the entries of a dump that q wants. The others — all but
// a few when the kernel did not filter — are told by their zone and
// status alone, without decoding them.
func (c *conntrack) keep(msgs []netlink.Message, q ctQuery) ([]ctEntry, error) {
	var out []ctEntry
	for _, m := range msgs {
		if len(m.Data) < 4 || !q.match(peekZoneStatus(m.Data[4:])) {
			continue
		}
		e, ok, err := parseCtEntry(m.Data[4:])
		if err != nil {
			return nil, fmt.Errorf("parse conntrack entry: %w", err)
		}
		if ok && q.match(e.Zone, e.Status) {
			out = append(out, e)
		}
	}
	c.last = dumpStats{returned: len(msgs), kept: len(out)}
	return out, nil
}

// peekZoneStatus reads an entry's CTA_ZONE and CTA_STATUS from its
// top-level attributes without allocating; the kernel leaves CTA_ZONE out
// for zone 0. A malformed entry reads as zone 0, status 0, and is
// decoded (and refused) in full if that is what the query wants.
func peekZoneStatus(b []byte) (zone uint16, status uint32) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		typ := binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
		if l < 4 || l > len(b) {
			return zone, status
		}
		switch data := b[4:l]; {
		case typ == ctaZone && len(data) == 2:
			zone = binary.BigEndian.Uint16(data)
		case typ == ctaStatus && len(data) == 4:
			status = binary.BigEndian.Uint32(data)
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return zone, status
}
