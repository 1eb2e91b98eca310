package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// A home: the donor's relay (192.168.77.2) on a LAN behind a router
// (192.168.77.1 inside, 11.22.33.2 outside) that runs Debian's miniupnpd
// over nftables NAT, and the "Internet" (11.22.33.1 and .3: callers).
// miniupnpd refuses to forward from a reserved external address (the
// documentation ranges the other tests use), so the Internet side has
// public-looking addresses; they exist only inside these namespaces.
const (
	homeRelay   = "192.168.77.2"
	homeInside  = "192.168.77.1"
	homeOutside = "11.22.33.2"
	homeCaller  = "11.22.33.1"
	homeCallee  = "11.22.33.3"
	// homeRenumbered is the router's address after its ISP changed it.
	homeRenumbered = "11.22.33.4"
	homePortMin    = 40000
	homePortMax    = 40999
	// The router's rules allow 40000-40007: two channels. Few, because
	// miniupnpd takes up to half a second per mapping on a busy machine.
	homeGranted  = 40007
	homeLeaseSec = 20
)

type home struct {
	relay, router, inet string
}

// newHome builds the three namespaces and their links.
func newHome(t *testing.T) home {
	t.Helper()
	harness.RequireRoot(t)
	id := fmt.Sprintf("%x%04x", os.Getpid(), time.Now().UnixNano()&0xffff)
	h := home{relay: "pmr-" + id, router: "pmg-" + id, inet: "pmi-" + id}
	for _, ns := range []string{h.relay, h.router, h.inet} {
		run(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("ip netns del %s: %v: %s", ns, err, out)
			}
		})
		run(t, "ip", "-n", ns, "link", "set", "lo", "up")
	}
	run(t, "ip", "-n", h.router, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", h.relay)
	run(t, "ip", "-n", h.router, "link", "add", "eth0", "type", "veth", "peer", "name", "wan0", "netns", h.inet)
	for _, s := range [][]string{
		{"-n", h.router, "addr", "add", homeInside + "/24", "dev", "lan0"},
		{"-n", h.router, "addr", "add", homeOutside + "/24", "dev", "eth0"},
		{"-n", h.relay, "addr", "add", homeRelay + "/24", "dev", "eth0"},
		{"-n", h.inet, "addr", "add", homeCaller + "/24", "dev", "wan0"},
		{"-n", h.inet, "addr", "add", homeCallee + "/24", "dev", "wan0"},
		{"-n", h.router, "link", "set", "lan0", "up"},
		{"-n", h.router, "link", "set", "eth0", "up"},
		{"-n", h.relay, "link", "set", "eth0", "up"},
		{"-n", h.inet, "link", "set", "wan0", "up"},
		{"-n", h.relay, "route", "add", "default", "via", homeInside},
	} {
		run(t, "ip", s...)
	}
	run(t, "ip", "netns", "exec", h.router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	return h
}

// startRouter runs miniupnpd in the router namespace; allow says whether
// its rules let the relay map 40000-40007 and 3478 (else it refuses all).
func (h home) startRouter(ctx context.Context, t *testing.T, natpmp, upnp, allow bool) *harness.Miniupnpd {
	t.Helper()
	var rules []string
	if allow {
		rules = []string{
			fmt.Sprintf("allow %d-%d %s/32 %d-%d", homePortMin, homeGranted, homeRelay, homePortMin, homeGranted),
			fmt.Sprintf("allow 3478 %s/32 3478", homeRelay),
		}
	}
	m, err := harness.StartMiniupnpd(ctx, h.router, t.TempDir(), harness.MiniupnpdOptions{
		ExtIf: "eth0", LANIf: "lan0", Rules: rules, NATPMP: natpmp, UPnP: upnp, MinLifetime: homeLeaseSec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Stop()
		if t.Failed() {
			t.Logf("miniupnpd logs:\n%s", m.Logs())
		}
	})
	return m
}

// startRelay starts Prosody and relayd in the relay's namespace, with
// port mapping on (the default) and a short lease.
func (h home) startRelay(ctx context.Context, t *testing.T) (*harness.Relayd, *harness.XMPPServer) {
	t.Helper()
	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: h.relay, Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg := config.Default()
	cfg.Ports = config.PortRange{Min: homePortMin, Max: homePortMax}
	cfg.PortMapping.LeaseSeconds = homeLeaseSec
	cfg.XMPP = []config.Service{{Type: "component", Server: srv.Component.String(), Domain: srv.ComponentDomain, Secret: srv.Secret}}
	rd := startRelayd(t, h.relay, cfg)
	if _, err := rd.WaitLog(ctx, "xmpp component online", 1, nil); err != nil {
		t.Fatal(err)
	}
	return rd, srv
}

// TestPortMappingThroughMiniupnpd: relayd behind a miniupnpd router maps
// its STUN port and as much of the relay range as the router allows (by
// PCP, the first protocol it tries), shrinks its capacity to that,
// advertises the router's external address, and callers on the
// Internet reach a channel through the mappings; the mappings are
// renewed before their 20-s lease ends, a new external address of the
// router reaches channel results, and the mappings are removed when
// relayd stops.
func TestPortMappingThroughMiniupnpd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	h := newHome(t)
	router := h.startRouter(ctx, t, true, true, true)
	rd, srv := h.startRelay(ctx, t)

	mapped, err := rd.WaitLog(ctx, "ports mapped on the router", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d-%d", homePortMin, homeGranted)
	if mapped.Str("protocol") != "pcp" || mapped.Str("relay_ports") != want || mapped.Str("external_address") != homeOutside {
		t.Fatalf("mapped %v, want pcp, relay ports %s at %s", mapped, want, homeOutside)
	}
	st, err := rd.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Reachability != "port_mapped" || st.PublicAddress != homeOutside || st.Channels.Capacity != (homeGranted-homePortMin+1)/4 {
		t.Fatalf("status reachability %s at %s, capacity %d; want port_mapped at %s, capacity %d",
			st.Reachability, st.PublicAddress, st.Channels.Capacity, homeOutside, (homeGranted-homePortMin+1)/4)
	}
	if pm := st.PortMapping; pm == nil || pm.Protocol != "pcp" || pm.RelayPorts != want || len(pm.Mappings) != 2 || pm.Mappings[0].Ports != "3478" {
		t.Fatalf("status port_mapping %+v", pm)
	}
	redirects, err := router.Redirects()
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(redirects, "dnat"); n != 1+homeGranted-homePortMin+1 {
		t.Fatalf("router forwards %d ports, want %d:\n%s", n, 1+homeGranted-homePortMin+1, redirects)
	}

	// A call from the Internet through the router.
	outs, err := srv.Requester(user, password).Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 {
		t.Fatalf("channel: %+v %v", outs, err)
	}
	local, remote, err := outs[0].RelayAddrs()
	if err != nil {
		t.Fatal(err)
	}
	if local.Addr().String() != homeOutside || int(local.Port()) > homeGranted || int(remote.Port()) > homeGranted {
		t.Fatalf("channel at %s and %s, want ports of %s at the router's address", local, remote, want)
	}
	caller, err := harness.ListenEndpoint(ctx, h.inet, netip.MustParseAddr(homeCaller), "caller")
	if err != nil {
		t.Fatal(err)
	}
	defer caller.Close()
	callee, err := harness.ListenEndpoint(ctx, h.inet, netip.MustParseAddr(homeCallee), "callee")
	if err != nil {
		t.Fatal(err)
	}
	defer callee.Close()
	if _, _, err := harness.Latch(ctx, caller, callee, local, remote); err != nil {
		t.Fatalf("media through the router's mappings: %v", err)
	}

	// The ISP gives the router a new address: the renewal at half the
	// lease (same ports) brings it, and the next channel is there.
	run(t, "ip", "-n", h.router, "addr", "del", homeOutside+"/24", "dev", "eth0")
	run(t, "ip", "-n", h.router, "addr", "add", homeRenumbered+"/24", "dev", "eth0")
	if _, err := rd.WaitLog(ctx, "ports mapped on the router", 2, func(r harness.LogRecord) bool {
		return r.Str("relay_ports") == want && r.Str("external_address") == homeRenumbered
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "public address changed", 1, func(r harness.LogRecord) bool { return r.Str("to") == homeRenumbered }); err != nil {
		t.Fatal(err)
	}
	outs, err = srv.Requester(user, password).Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 || outs[0].Channel["host"] != homeRenumbered {
		t.Fatalf("channel after the router's new address: %+v %v", outs, err)
	}

	// A clean stop deletes the mappings.
	if err := rd.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "port mappings deleted", 1, nil); err != nil {
		t.Fatal(err)
	}
	if redirects, err := router.Redirects(); err != nil || redirects != "" {
		t.Fatalf("router still forwards after relayd stopped (%v):\n%s", err, redirects)
	}
}

// TestPortMappingUPnPAndRefusal: a router with only UPnP IGD gets the
// mappings through it; a router whose rules refuse relayd is reported
// (log and status) and relayd goes on, advertising what it detects.
func TestPortMappingUPnPAndRefusal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	t.Run("upnp", func(t *testing.T) {
		h := newHome(t)
		router := h.startRouter(ctx, t, false, true, true)
		rd, _ := h.startRelay(ctx, t)
		mapped, err := rd.WaitLog(ctx, "ports mapped on the router", 1, nil)
		if err != nil {
			t.Fatal(err)
		}
		if mapped.Str("protocol") != "upnp" || mapped.Str("external_address") != homeOutside || mapped.Str("relay_ports") != fmt.Sprintf("%d-%d", homePortMin, homeGranted) {
			t.Fatalf("mapped %v", mapped)
		}
		if redirects, err := router.Redirects(); err != nil || !strings.Contains(redirects, homeRelay+":3478") {
			t.Fatalf("router redirects (%v):\n%s", err, redirects)
		}
		if err := rd.Stop(); err != nil {
			t.Fatal(err)
		}
		if redirects, err := router.Redirects(); err != nil || redirects != "" {
			t.Fatalf("router still forwards after relayd stopped (%v):\n%s", err, redirects)
		}
	})
	t.Run("refused", func(t *testing.T) {
		h := newHome(t)
		router := h.startRouter(ctx, t, true, true, false)
		rd, srv := h.startRelay(ctx, t)
		if _, err := rd.WaitLog(ctx, "the router maps no port for relayd: forward the ports on the router by hand, or calls from the Internet will fail", 1, nil); err != nil {
			t.Fatal(err)
		}
		// PCP refused, so NAT-PMP — the same service, which miniupnpd
		// answers only after trying every other external port — is not
		// asked; UPnP is, and refuses too.
		if logs := router.Logs(); !strings.Contains(logs, "PCP MAP: failed to add mapping") || strings.Contains(logs, "NAT-PMP port mapping request") {
			t.Fatalf("want a PCP refusal and no NAT-PMP mapping request; miniupnpd:\n%s", logs)
		}
		st, err := rd.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if pm := st.PortMapping; pm == nil || pm.Error == "" || len(pm.Mappings) != 0 || st.Reachability == "port_mapped" ||
			st.Channels.Capacity != (homePortMax-homePortMin+1)/4 {
			t.Fatalf("status %+v, port_mapping %+v", st, st.PortMapping)
		}
		// It goes on: channels are still granted.
		outs, err := srv.Requester(user, password).Run(ctx, harness.RequestArgs{})
		if err != nil || len(outs) != 1 || outs[0].Type != "result" {
			t.Fatalf("channel: %+v %v", outs, err)
		}
	})
}
