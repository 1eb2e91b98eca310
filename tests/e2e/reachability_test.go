package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/reachability"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// The Internet side of the reachability test: Debian's stund answers on
// the hub's address and, for change requests, from a second one.
const (
	stundSecond = "203.0.113.200" // the hub's second address
	stundPort   = 3478            // stund's primary port (3479 its other)
	singlePort  = 3490            // a stund started with one address only
)

// TestReachabilitySelfTest checks relayd's verdict on whether the Internet
// reaches its relay ports and STUN port, against Debian's stund (which
// answers change requests from its second address), for a relay
//
//	behind a NAT that forwards nothing:          not reachable
//	behind a NAT that forwards the ports:        reachable
//	behind a NAT that forwards half the range:   not reachable (the highest port)
//	in front of the NAT, on the Internet side:   reachable
//	with a STUN server of one address:           cannot tell
//
// Each relay is in a namespace of its own (its own router, its own
// conntrack), so the cases run side by side.
func TestReachabilitySelfTest(t *testing.T) {
	harness.RequireRoot(t)
	for _, tool := range []string{"nft", "stund"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (run tests/deps.sh): %v", tool, err)
		}
	}
	// The cases run in parallel after this function returns: the
	// context ends with the test, not with the function.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	lan := harness.NewLAN(t, "jnr", "inet", "natnone", "natfwd", "natpart", "public", "public2")
	run(t, "ip", "-n", lan.NS("inet"), "addr", "add", stundSecond+"/24", "dev", "br0")
	inet := lan.Addr("inet").String()
	startStund(t, lan, "-h", inet, "-a", stundSecond, "-p", fmt.Sprint(stundPort), "-o", fmt.Sprint(stundPort+1))
	startStund(t, lan, "-h", inet, "-p", fmt.Sprint(singlePort), "-o", fmt.Sprint(singlePort+1))
	server := fmt.Sprintf("%s:%d", inet, stundPort)

	forwardAll := `iifname "eth0" udp dport { 40000-40099, 3478 } dnat to ` + natClient
	forwardHalf := `iifname "eth0" udp dport { 40000-40049, 3478 } dnat to ` + natClient
	cases := []struct {
		name, host, forward, server string
		behindNAT                   bool
		relay, stun                 reachability.Verdict
		summary, advice             string
	}{
		{"behind NAT, nothing forwarded", "natnone", "", server, true, reachability.NotReachable, reachability.NotReachable,
			"Not reachable: datagrams from the Internet do not reach ports 40000 and 40096 (relay) and port 3478 (STUN)",
			"Forward UDP ports 40000-40099 and 3478 on the router to this device (" + natClient + ")"},
		{"behind NAT, ports forwarded", "natfwd", forwardAll, server, true, reachability.Reachable, reachability.Reachable,
			"Reachable: the Internet can reach ports 40000 and 40096 (relay) and port 3478 (STUN).", ""},
		{"behind NAT, half the range forwarded", "natpart", forwardHalf, server, true, reachability.NotReachable, reachability.Reachable,
			"Not reachable: datagrams from the Internet do not reach port 40096 (relay)", "Forward UDP ports 40000-40099 and 3478"},
		{"in front of the NAT", "public", "", server, false, reachability.Reachable, reachability.Reachable,
			"Reachable: the Internet can reach ports 40000 and 40096 (relay) and port 3478 (STUN).", ""},
		{"STUN server without a second address", "public2", "", fmt.Sprintf("%s:%d", inet, singlePort), false,
			reachability.CannotTell, reachability.CannotTell, "has no second address", "reachability.stun_servers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := lan.NS(tc.host)
			if tc.behindNAT {
				ns = natClientNamespaceWith(t, lan, tc.host, reachNATRuleset(tc.forward))
			}
			cfg := config.Default()
			cfg.Ports = config.PortRange{Min: 40000, Max: 40099}
			cfg.Reachability.STUNServers = []string{tc.server}
			cfg.Metrics.Listen = "127.0.0.1:9464"
			rd := startRelayd(t, ns, cfg)
			// The check may finish before the API and metrics listen.
			for _, msg := range []string{"reachability checked", "provisioning API listening", "metrics served"} {
				if _, err := rd.WaitLog(ctx, msg, 1, nil); err != nil {
					t.Fatal(err)
				}
			}
			st, err := rd.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			r := st.ReachabilityCheck
			if r == nil || r.RelayPorts != tc.relay || r.STUN != tc.stun || !strings.Contains(r.Summary, tc.summary) ||
				!strings.Contains(r.Advice, tc.advice) || (tc.advice == "") != (r.Advice == "") || r.Server != tc.server || r.CheckedAt == nil {
				t.Fatalf("reachability_check %+v\nwant relay ports %s, STUN %s, summary with %q, advice with %q", r, tc.relay, tc.stun, tc.summary, tc.advice)
			}
			t.Logf("%s: %s %s", tc.name, r.Summary, r.Advice)
			metrics := scrapeIn(ctx, t, ns, netip.MustParseAddrPort(cfg.Metrics.Listen))
			for _, want := range []string{
				fmt.Sprintf(`relayd_reachability{check="relay_ports",verdict="%s"} 1`, tc.relay),
				fmt.Sprintf(`relayd_reachability{check="stun",verdict="%s"} 1`, tc.stun),
			} {
				if !strings.Contains(metrics, want+"\n") {
					t.Errorf("metrics lack %s", want)
				}
			}
		})
	}
}

// reachNATRuleset is a home router's: masquerade keeping the ports (as
// Linux does when it can), a stateful forward filter, and forward, the
// port forwarding rule ("" for none).
func reachNATRuleset(forward string) string {
	return fmt.Sprintf(`
table ip jnrelay_nat {
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		%[2]s
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[1]s oifname "eth0" masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		ct status dnat accept
		iifname "lan0" oifname "eth0" accept
	}
}
`, natNet, forward)
}

// startStund runs Debian's stund in the hub namespace until the test ends.
func startStund(t *testing.T, lan *harness.LAN, args ...string) {
	t.Helper()
	cmd := lan.Command(context.Background(), lan.Hub(), "stund", args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("stund %s:\n%s", strings.Join(args, " "), out.String())
		}
	})
}

// scrapeIn fetches relayd's /metrics at addr inside namespace ns.
func scrapeIn(ctx context.Context, t *testing.T, ns string, addr netip.AddrPort) string {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return harness.DialTCPIn(ctx, ns, addr)
	}}}
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr.String()+"/metrics", nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", resp.StatusCode, err)
	}
	return string(body)
}
