package stun

import (
	"encoding/binary"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

func TestSourceKey(t *testing.T) {
	for _, c := range []struct {
		a, b string
		same bool
	}{
		{"192.0.2.1", "192.0.2.1", true},
		{"192.0.2.1", "192.0.2.2", false},
		{"192.0.2.1", "::ffff:192.0.2.1", true},           // a v4-mapped source is the IPv4 one
		{"2001:db8:1:2::1", "2001:db8:1:2:ffff::9", true}, // one /64
		{"2001:db8:1:2::1", "2001:db8:1:3::1", false},
		{"::ffff:0.0.0.1", "::1", false},
	} {
		if got := keyOf(netip.MustParseAddr(c.a)) == keyOf(netip.MustParseAddr(c.b)); got != c.same {
			t.Errorf("%s and %s: same source %v, want %v", c.a, c.b, got, c.same)
		}
	}
}

func TestSourceBucket(t *testing.T) {
	epoch := time.Unix(1000, 0)
	l := newSourceLimiter(10, 16, epoch)
	a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
	allowed := 0
	for range 50 {
		if l.allow(a, epoch) {
			allowed++
		}
	}
	if allowed != 20 {
		t.Fatalf("burst: %d allowed, want 20", allowed)
	}
	if !l.allow(b, epoch) {
		t.Fatal("another source refused while the first is over its share")
	}
	if l.allow(a, epoch.Add(50*time.Millisecond)) {
		t.Fatal("a token back after 50 ms at 10/s")
	}
	if !l.allow(a, epoch.Add(150*time.Millisecond)) || l.allow(a, epoch.Add(150*time.Millisecond)) {
		t.Fatal("want exactly one token back after 150 ms at 10/s")
	}
}

// TestSourceTableBounded: however many sources a spoofer rotates through,
// the table stays within its bound; refilled sources are forgotten
// first, and a flooder in the table keeps its empty bucket while idle
// sources are swept.
func TestSourceTableBounded(t *testing.T) {
	const n = 200_000 // distinct sources, 50 times the bound
	v4 := func(i int) netip.Addr {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], 0x0a000000+uint32(i))
		return netip.AddrFrom4(b)
	}
	v6 := func(i int) netip.Addr {
		b := netip.MustParseAddr("2001:db8::").As16()
		binary.BigEndian.PutUint32(b[4:8], uint32(i)) // a /64 each
		return netip.AddrFrom16(b)
	}
	for _, c := range []struct {
		name string
		addr func(int) netip.Addr
		step time.Duration // between sources
	}{
		{"ipv4 at once", v4, 0},
		{"ipv6 /64s at once", v6, 0},
		{"ipv4 spread", v4, time.Millisecond}, // 1,000 sources a second: entries older than 2 s have refilled and go first
		{"ipv6 in one /64", func(i int) netip.Addr {
			b := netip.MustParseAddr("2001:db8::").As16()
			binary.BigEndian.PutUint64(b[8:], uint64(i))
			return netip.AddrFrom16(b)
		}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			epoch := time.Unix(1000, 0)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			l := newSourceLimiter(20, maxSources, epoch)
			largest, now := 0, epoch
			for i := range n {
				now = now.Add(c.step)
				l.allow(c.addr(i), now)
				largest = max(largest, l.size())
			}
			runtime.GC()
			runtime.ReadMemStats(&after)
			grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			t.Logf("%d sources: table at most %d entries, %d at the end; the table holds %d kB", n, largest, l.size(), grew>>10)
			if largest > maxSources {
				t.Fatalf("table grew to %d entries, bound %d", largest, maxSources)
			}
			if grew > 1<<20 {
				t.Fatalf("the table holds %d kB at %d entries at most, want under 1 MB", grew>>10, maxSources)
			}
			runtime.KeepAlive(l)
		})
	}
}

// A source over its share is not forgotten in a sweep of refilled ones:
// it cannot get a fresh burst just because many others passed by slowly.
func TestSweepKeepsActiveSources(t *testing.T) {
	epoch := time.Unix(1000, 0)
	l := newSourceLimiter(10, 64, epoch)
	flooder := netip.MustParseAddr("192.0.2.66")
	for range 30 {
		l.allow(flooder, epoch)
	}
	now := epoch
	for i := range 63 * 4 { // fill and sweep several times
		now = now.Add(10 * time.Second) // every other entry has refilled
		l.allow(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), now)
		l.allow(flooder, now) // still flooding: takes the token it got back
		for l.allow(flooder, now) {
		}
	}
	if l.allow(flooder, now) {
		t.Fatal("the flooder got a token it had not earned")
	}
}
