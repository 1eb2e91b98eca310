package e2e

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestRelayBehindNATLearnsPublicAddress runs relayd on a donor's LAN
// (192.0.2.2) behind a masquerading router (203.0.113.2), with no
// public_address configured: it asks a STUN server on the Internet side
// (203.0.113.1) and advertises the router's address, and warns the donor
// to forward the ports.
func TestRelayBehindNATLearnsPublicAddress(t *testing.T) {
	harness.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lan := harness.NewLAN(t, "jnn", "relay", "router") // "relay" is the Internet side here
	donorNS := natClientNamespace(t, lan, "router")
	stunSrv, _ := startSTUN(t, lan, netip.AddrPortFrom(lan.Addr("relay"), 3478), false)

	srv, err := harness.StartProsody(ctx, harness.ServerOptions{Netns: donorNS, Users: map[string]string{user: password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	cfg := config.Default()
	cfg.PublicAddressSTUN = []string{stunSrv.Addr().String()}
	cfg.Ports = config.PortRange{Min: 40000, Max: 40099}
	cfg.XMPP = []config.Service{{Type: "component", Server: srv.Component.String(), Domain: srv.ComponentDomain, Secret: srv.Secret}}
	rd := startRelayd(t, donorNS, cfg)
	warn, err := rd.WaitLog(ctx, "relay is behind NAT: forward UDP ports 40000-40099 and 3478 on the router to this device, or calls through it will fail", 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if warn.Str("public_address") != lan.Addr("router").String() || warn.Str("local_address") != natClient {
		t.Fatalf("warning %v", warn)
	}
	if _, err := rd.WaitLog(ctx, "xmpp component online", 1, nil); err != nil {
		t.Fatal(err)
	}
	outs, err := srv.Requester(user, password).Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("channel: %+v %v", outs, err)
	}
	if got := outs[0].Channel["host"]; got != lan.Addr("router").String() {
		t.Fatalf("channel host %s, want the NAT's public address %s", got, lan.Addr("router"))
	}
	// The status tells the donor the router must forward the ports.
	st, err := rd.Status(ctx)
	if err != nil || st.Reachability != "behind_nat" || st.PublicAddress != lan.Addr("router").String() {
		t.Fatalf("status %+v %v, want behind_nat at %s", st, err, lan.Addr("router"))
	}
}
