package channel

import (
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/kernel/nft"
)

// TestChooseSockets walks chooseSockets' order with fake fast-path
// tables: what auto picks for each listen address, fast path mode and
// fast path the host can open. The cases that reach the kernel need
// root (CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW) and BPF sk_lookup.
func TestChooseSockets(t *testing.T) {
	unavailable := &nft.UnavailableError{Reason: "no_ebpf", Err: errors.New("not here")}
	ebpfTable, ftTable, nftTable := newFakeTable(), newFakeTable(), newFakeTable()
	canSteer := os.Geteuid() == 0
	if canSteer {
		if err := kernel.SteeringAvailable(); err != nil {
			canSteer = false
		}
	}
	for _, tc := range []struct {
		name     string
		listen   string
		mode     FastPathMode
		ebpf, ft error
		nft      error
		steers   bool // needs the kernel's steering to decide
		want     SocketsMode
		why      string
		table    *fakeTable
	}{
		{"IPv6 listen address", "::1", FastPathOff, nil, nil, nil, false, SocketsPerPort, "IPv6", nil},
		{"nftables required", "127.0.0.1", FastPathNftables, nil, nil, nil, false, SocketsPerPort, "nftables", nil},
		{"flowtable required", "127.0.0.1", FastPathFlowtable, nil, nil, nil, false, SocketsPerPort, "flowtable", nil},
		{"fast path off", "127.0.0.1", FastPathOff, nil, nil, nil, true, SocketsSteered, "can steer", nil},
		{"eBPF opens", "127.0.0.1", FastPathAuto, nil, nil, nil, true, SocketsSteered, "eBPF fast path serves", ebpfTable},
		{"flowtable opens after eBPF", "127.0.0.1", FastPathAuto, unavailable, nil, nil, true, SocketsPerPort, "(flowtable)", ftTable},
		{"only nftables opens", "127.0.0.1", FastPathAuto, unavailable, unavailable, nil, true, SocketsPerPort, "(nftables)", nftTable},
		{"no fast path at all", "127.0.0.1", FastPathAuto, unavailable, unavailable, unavailable, true, SocketsSteered, "no in-kernel fast path", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.steers && !canSteer {
				t.Skip("needs root and BPF sk_lookup")
			}
			op := tableOpener{via: "relayd",
				ebpf: func(netip.Addr, int) (kernelTable, error) {
					if tc.ebpf != nil {
						return nil, tc.ebpf
					}
					return ebpfTable, nil
				},
				flowtable: func(netip.Addr, int) (kernelTable, error) {
					if tc.ft != nil {
						return nil, tc.ft
					}
					return ftTable, nil
				},
				nftables: func(netip.Addr, int) (kernelTable, error) {
					if tc.nft != nil {
						return nil, tc.nft
					}
					return nftTable, nil
				}}
			sh := &shared{log: slog.New(slog.DiscardHandler), listen: netip.MustParseAddr(tc.listen), openers: []tableOpener{op}}
			cfg := Config{Listen: netip.MustParseAddr(tc.listen), Settings: Settings{FastPath: tc.mode}}
			got, err := chooseSockets(cfg, sh, &fastPathCounts{}, 16)
			if err != nil {
				t.Fatal(err)
			}
			if got.Mode != tc.want || !strings.Contains(got.Why, tc.why) {
				t.Fatalf("chose %s (%s), want %s because of %q", got.Mode, got.Why, tc.want, tc.why)
			}
			switch {
			case tc.table == nil && got.fp != nil:
				t.Fatalf("opened fast path %s, want none", got.fp.table.Name())
			case tc.table != nil && (got.fp == nil || got.fp.table != kernelTable(tc.table)):
				t.Fatalf("fast path %v, want the fake table", got.fp)
			}
			if got.fp != nil {
				got.fp.close()
			}
			if tc.mode == FastPathAuto && !got.opened {
				t.Error("auto fast path: chooseSockets did not say it decided it")
			}
		})
	}
}

// TestSocketsAutoRelays: a Manager on auto reports what it chose and
// relays a call through it.
func TestSocketsAutoRelays(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.Sockets = SocketsAuto })
	want := SocketsPerPort
	if os.Geteuid() == 0 && kernel.SteeringAvailable() == nil {
		want = SocketsSteered
	}
	if got := m.Sockets(); got.Mode != want || got.Why == "" {
		t.Fatalf("auto chose %+v, want %s with a reason", got, want)
	}
	info, a, b, _, _ := call(t, m)
	a.send(info.LocalPort, []byte("through-auto"))
	b.expect([]byte("through-auto"), info.LocalPort+2)
}
