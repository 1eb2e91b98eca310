package portmap

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"
)

// fakeRouter grants ports up to a table size, like a router whose table
// is full, and records what is mapped.
type fakeRouter struct {
	room     int
	mapped   map[Port]bool
	external netip.Addr
	removed  int
}

func (f *fakeRouter) protocol() Protocol { return NATPMP }
func (f *fakeRouter) externalAddress(context.Context) (netip.Addr, error) {
	return f.external, nil
}
func (f *fakeRouter) add(_ context.Context, p Port, lifetime time.Duration) (time.Duration, error) {
	if !f.mapped[p] && len(f.mapped) >= f.room {
		return 0, fmt.Errorf("port %d: %w", p.Port, errRefused)
	}
	f.mapped[p] = true
	return lifetime, nil
}
func (f *fakeRouter) remove(_ context.Context, p Port) error {
	delete(f.mapped, p)
	f.removed++
	return nil
}

func testMapper(min, max int) *Mapper {
	return New(Config{
		Fixed:    []Port{{Transport: UDP, Port: 3478, Purpose: "stun"}},
		RelayMin: min, RelayMax: max, Lifetime: time.Minute,
		Gateway: func() (netip.Addr, netip.Addr, error) {
			return netip.MustParseAddr("192.168.1.1"), netip.MustParseAddr("192.168.1.5"), nil
		},
	})
}

func TestMapAllShrinksToWholeChannels(t *testing.T) {
	m := testMapper(40001, 40999)
	r := &fakeRouter{room: 1 + 10, mapped: map[Port]bool{}, external: netip.MustParseAddr("198.51.100.7")}
	st := m.mapAll(context.Background(), r, nil)
	// STUN, then two whole channels from the first even port: the third
	// channel's two granted ports are given back.
	if st.RelayFirst != 40002 || st.RelayLast != 40009 || len(st.Mappings) != 9 || len(r.mapped) != 9 {
		t.Fatalf("relay %d-%d, %d mappings, router holds %d", st.RelayFirst, st.RelayLast, len(st.Mappings), len(r.mapped))
	}
	if st.External != r.external || st.Error == "" {
		t.Fatalf("state %+v", st)
	}
	// The router makes room: the next round maps more; then it shrinks,
	// and the ports beyond the new end are given back.
	r.room = 1 + 16
	st = m.mapAll(context.Background(), r, st.Mappings)
	if st.RelayLast != 40017 {
		t.Fatalf("after growing: relay %d-%d", st.RelayFirst, st.RelayLast)
	}
	r.room, r.mapped = 1+4, map[Port]bool{} // the router restarted with a smaller table
	st = m.mapAll(context.Background(), r, st.Mappings)
	if st.RelayLast != 40005 || len(r.mapped) != 5 {
		t.Fatalf("after shrinking: relay %d-%d, router holds %d", st.RelayFirst, st.RelayLast, len(r.mapped))
	}
}

func TestMapAllBoundsTheRange(t *testing.T) {
	m := testMapper(10000, 60000)
	r := &fakeRouter{room: 1 << 20, mapped: map[Port]bool{}, external: netip.MustParseAddr("198.51.100.7")}
	st := m.mapAll(context.Background(), r, nil)
	if st.RelayLast-st.RelayFirst+1 != MaxRelayPorts || len(r.mapped) != MaxRelayPorts+1 || st.Error != "" {
		t.Fatalf("relay %d-%d, router holds %d, err %q", st.RelayFirst, st.RelayLast, len(r.mapped), st.Error)
	}
	// Only relayd's own ports were asked for.
	for p := range r.mapped {
		if p.Port != 3478 && (p.Port < 10000 || p.Port >= 10000+MaxRelayPorts) {
			t.Fatalf("mapped %v", p)
		}
	}
	m.removeAll(r, st.Mappings)
	if len(r.mapped) != 0 {
		t.Fatalf("%d mappings left after stop", len(r.mapped))
	}
}

func TestMapAllRefusedEntirely(t *testing.T) {
	m := testMapper(40000, 40999)
	r := &fakeRouter{room: 0, mapped: map[Port]bool{}, external: netip.MustParseAddr("198.51.100.7")}
	st := m.mapAll(context.Background(), r, nil)
	if len(st.Mappings) != 0 || st.RelayFirst != 0 || st.Error == "" {
		t.Fatalf("state %+v", st)
	}
}

func TestValidExternal(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "127.0.0.1", "224.0.0.1", "255.255.255.255", "169.254.1.1", "2001:db8::1"} {
		if validExternal(netip.MustParseAddr(s)) == nil {
			t.Errorf("%s accepted", s)
		}
	}
	for _, s := range []string{"198.51.100.7", "100.64.0.1", "8.8.8.8"} {
		if err := validExternal(netip.MustParseAddr(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
}
