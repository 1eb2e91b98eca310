//go:build !nofastpath

package nft

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// What the tests and the benchmark need of ctnetlink beyond relayd's own
// part: entries made without traffic, with NAT where the test asks
// (createNAT's, with either rewrite left out where it is not set).

// testEntry is a UDP entry to create: orig's datagram in zone, its
// destination rewritten to dnat and its source to snat where they are set.
type testEntry struct {
	zone       uint16
	orig       ctTuple
	dnat, snat netip.AddrPort
}

// insert creates e (the kernel computes the reply tuple from the NAT).
func (c *conntrack) insert(e testEntry) error {
	return c.createNAT(e.zone, e.orig, e.dnat, e.snat, 600)
}

// encodeEntry is e as a dump reports it, for the fake kernel.
func encodeEntry(e ctEntry) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian
	ae.Nested(ctaTupleOrig, func(nae *netlink.AttributeEncoder) error { encodeTuple(nae, e.Orig); return nil })
	ae.Nested(ctaTupleReply, func(nae *netlink.AttributeEncoder) error { encodeTuple(nae, e.Reply); return nil })
	ae.Uint32(ctaStatus, e.Status)
	for typ, c := range map[uint16]Counter{ctaCountersOrig: e.OrigCount, ctaCountersReply: e.ReplyCount} {
		ae.Nested(typ, func(nae *netlink.AttributeEncoder) error {
			nae.Uint64(ctaPackets, c.Packets)
			nae.Uint64(ctaBytes, c.Bytes)
			return nil
		})
	}
	ae.Uint32(ctaID, e.ID)
	ae.Uint16(ctaZone, e.Zone)
	b, err := ae.Encode()
	if err != nil {
		panic(err)
	}
	return append([]byte{unix.AF_INET, unix.NFNETLINK_V0, 0, 0}, b...)
}

// inNewNetns runs fn on a thread in a network namespace of its own, which
// lives as long as a socket fn opened there (the thread ends with fn).
func inNewNetns(tb testing.TB, fn func() error) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root (a network namespace)")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare network namespace: %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		tb.Fatal(err)
	}
}

// kernelAtLeast says whether the running kernel is major.minor or later.
func kernelAtLeast(tb testing.TB, major, minor int) bool {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		tb.Fatal(err)
	}
	rel := unix.ByteSliceToString(u.Release[:])
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		tb.Fatalf("kernel release %q", rel)
	}
	maj, err1 := strconv.Atoi(parts[0])
	min, err2 := strconv.Atoi(leadingDigits(parts[1]))
	if err1 != nil || err2 != nil {
		tb.Fatalf("kernel release %q", rel)
	}
	return maj > major || maj == major && min >= minor
}

func leadingDigits(s string) string {
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	return s[:i]
}
