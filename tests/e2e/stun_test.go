package e2e

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/relayd/stun"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// The NATed client's private network (TEST-NET-1) and the port range the NAT
// maps it to, so a mapped port proves the NAT's mapping was reported.
const (
	natNet       = "192.0.2.0/24"
	natInside    = "192.0.2.1"
	natClient    = "192.0.2.2"
	natPortFirst = 61000
	natPortLast  = 61099
)

// TestSTUNBehindNAT runs the STUN server on the "public" relay host
// (203.0.113.1) and queries it from a client namespace (192.0.2.2) behind a
// masquerading NAT router (203.0.113.2): a pion/stun client and Debian's
// stun-client must both be told the NAT's public address and mapped port.
func TestSTUNBehindNAT(t *testing.T) {
	harness.RequireRoot(t)
	for _, tool := range []string{"nft", "stun"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not installed (run tests/deps.sh): %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	lan := harness.NewLAN(t, "stun", "relay", "nat")
	clientNS := natClientNamespace(t, lan, "nat")
	relayAddr, natAddr := lan.Addr("relay"), lan.Addr("nat")

	// Classic on: Debian's stun-client speaks RFC 3489 (no magic cookie).
	srv, _ := startSTUN(t, lan, netip.AddrPortFrom(relayAddr, stun.DefaultPort), true)
	// Classic off: the same client is never answered.
	strict, strictLog := startSTUN(t, lan, netip.AddrPortFrom(relayAddr, stun.DefaultPort+1), false)

	t.Run("pion-client", func(t *testing.T) {
		mapped := pionBinding(t, clientNS, netip.MustParseAddrPort(natClient+":5000"), srv.Addr())
		if mapped.Addr() != natAddr {
			t.Fatalf("mapped address %s, want the NAT's public address %s (the client is %s)", mapped, natAddr, natClient)
		}
		if p := mapped.Port(); p < natPortFirst || p > natPortLast {
			t.Fatalf("mapped port %d outside the NAT's range %d-%d", p, natPortFirst, natPortLast)
		}
		t.Logf("pion client %s:5000 was told %s", natClient, mapped)
	})

	t.Run("stun-client-test1", func(t *testing.T) {
		// `stun HOST 1 -v`: RFC 3489 test I, one Binding request with a
		// CHANGE-REQUEST of 0; -v prints the attributes it parsed.
		out, err := runStunClient(ctx, clientNS, relayAddr.String(), "1", "-v", "-p", "5001")
		if err != nil {
			t.Fatalf("stun: %v\n%s", err, out)
		}
		mapped := stunClientMapped(t, out)
		if mapped.Addr() != natAddr || mapped.Port() < natPortFirst || mapped.Port() > natPortLast {
			t.Fatalf("stun-client reports MappedAddress %s, want %s:%d-%d\n%s", mapped, natAddr, natPortFirst, natPortLast, out)
		}
		for _, want := range []string{"ok=1", "ServerName = jnrelay"} {
			if !strings.Contains(out, want) {
				t.Fatalf("stun-client output lacks %q:\n%s", want, out)
			}
		}
		t.Logf("stun-client test 1 accepted the answer: MappedAddress = %s", mapped)
	})

	t.Run("stun-client-nat-type", func(t *testing.T) {
		// Without a test number stun-client runs RFC 3489 NAT type
		// discovery: test I (plain Binding) is answered; tests II and III
		// ask for an answer from another address or port, which a
		// one-socket server cannot give, so they are dropped and counted
		// as unknown_attribute and the client reports them as 0. The
		// verdict is therefore not a NAT type, but the mapped address it
		// used is the NAT's.
		before := srv.Stats()
		out, err := runStunClient(ctx, clientNS, relayAddr.String(), "-v", "-p", "5002")
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) { // its exit status is the NAT type
			t.Fatalf("stun: %v\n%s", err, out)
		}
		mapped := stunClientMapped(t, out)
		if mapped.Addr() != natAddr {
			t.Fatalf("stun-client reports MappedAddress %s, want %s\n%s", mapped, natAddr, out)
		}
		for _, want := range []string{"test I = 1", "test II = 0", "test III = 0"} {
			if !strings.Contains(out, want) {
				t.Fatalf("stun-client output lacks %q:\n%s", want, out)
			}
		}
		after := srv.Stats()
		if after.Responses <= before.Responses || after.Dropped[stun.DropUnknownAttribute] <= before.Dropped[stun.DropUnknownAttribute] {
			t.Fatalf("stats before %+v after %+v: want answers to test I and drops of the change requests", before, after)
		}
		t.Logf("stun-client NAT type run (exit %v):\n%s", err, summary(out))
	})

	t.Run("stun-client-strict", func(t *testing.T) {
		// Without Classic the RFC 3489 request is dropped as bad_cookie.
		// stun-client then waits forever, so it is stopped once the server
		// has logged the drop: no answer can follow a drop.
		cctx, stop := context.WithCancel(ctx)
		defer stop()
		type result struct {
			out string
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, err := runStunClient(cctx, clientNS, fmt.Sprintf("%s:%d", relayAddr, strict.Addr().Port()), "1", "-v", "-p", "5003")
			done <- result{out, err}
		}()
		select {
		case reason := <-strictLog.drops:
			if reason != "bad_cookie" {
				t.Errorf("strict server dropped the request as %s, want bad_cookie", reason)
			}
		case <-ctx.Done():
			t.Fatal("strict server never saw stun-client's request")
		}
		stop()
		r := <-done
		if strings.Contains(r.out, "MappedAddress") {
			t.Fatalf("stun-client got an answer from the strict server:\n%s", r.out)
		}
		if st := strict.Stats(); st.Responses != 0 || st.Dropped[stun.DropBadCookie] == 0 {
			t.Fatalf("strict server stats %+v", st)
		}
	})

	for name, s := range map[string]*stun.Server{"classic": srv, "strict": strict} {
		st := s.Stats()
		if st.Requests != st.Responses+st.TotalDropped() {
			t.Errorf("%s server: %d requests != %d responses + %d dropped", name, st.Requests, st.Responses, st.TotalDropped())
		}
		t.Logf("%s server stats: requests=%d responses=%d malformed=%d dropped=%v", name, st.Requests, st.Responses, st.Malformed, st.DroppedBy())
	}
}

// natClientNamespace makes a client namespace behind host of lan: a veth
// pair lan0 (natInside, in host) <-> eth0 (natClient, in the new
// namespace), a default route through host, and in host IPv4 forwarding
// plus an nftables masquerade of the client's network out of host's LAN
// interface to ports natPortFirst-natPortLast. Unsolicited inbound traffic
// is not forwarded. It returns the client namespace, removed at cleanup.
func natClientNamespace(t *testing.T, lan *harness.LAN, host string) string {
	t.Helper()
	return natClientNamespaceWith(t, lan, host, fmt.Sprintf(`
table ip jnrelay_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		ip saddr %[1]s oifname "eth0" meta l4proto udp masquerade to :%[2]d-%[3]d
		ip saddr %[1]s oifname "eth0" masquerade
	}
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "lan0" oifname "eth0" accept
	}
}
`, natNet, natPortFirst, natPortLast))
}

// natClientNamespaceWith is natClientNamespace with the router's nftables
// ruleset of the caller's (its LAN side is lan0, its Internet side eth0).
func natClientNamespaceWith(t *testing.T, lan *harness.LAN, host, ruleset string) string {
	t.Helper()
	natNS := lan.NS(host)
	clientNS := fmt.Sprintf("stunc-%x%04x", os.Getpid(), rand.Uint32N(1<<16))
	run(t, "ip", "netns", "add", clientNS)
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", clientNS).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", clientNS, err, out)
		}
	})
	run(t, "ip", "-n", clientNS, "link", "set", "lo", "up")
	run(t, "ip", "-n", natNS, "link", "add", "lan0", "type", "veth", "peer", "name", "eth0", "netns", clientNS)
	run(t, "ip", "-n", natNS, "addr", "add", natInside+"/24", "dev", "lan0")
	run(t, "ip", "-n", natNS, "link", "set", "lan0", "up")
	run(t, "ip", "-n", clientNS, "addr", "add", natClient+"/24", "dev", "eth0")
	run(t, "ip", "-n", clientNS, "link", "set", "eth0", "up")
	run(t, "ip", "-n", clientNS, "route", "add", "default", "via", natInside)
	run(t, "ip", "netns", "exec", natNS, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	cmd := exec.Command("ip", "netns", "exec", natNS, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(ruleset)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v: %s\n%s", natNS, err, out, ruleset)
	}
	return clientNS
}

// run runs a setup command and fails the test with its output on error.
func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// startSTUN serves STUN on addr inside the relay namespace, in process,
// until the test ends.
func startSTUN(t *testing.T, lan *harness.LAN, addr netip.AddrPort, classic bool) (*stun.Server, *testLog) {
	t.Helper()
	conn, err := lan.ListenUDP("relay", addr)
	if err != nil {
		t.Fatal(err)
	}
	log := &testLog{t: t, drops: make(chan string, 64)}
	srv, err := stun.New(stun.Config{Conn: conn, Classic: classic, Logger: slog.New(log)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("STUN server on %s: %v", addr, err)
		}
	})
	return srv, log
}

// pionBinding sends one Binding request with a pion/stun client from local
// inside network namespace ns to server and returns XOR-MAPPED-ADDRESS.
func pionBinding(t *testing.T, ns string, local, server netip.AddrPort) netip.AddrPort {
	t.Helper()
	mapped, err := harness.STUNBindingIn(ns, local, server)
	if err != nil {
		t.Fatalf("STUN binding to %s from %s in %s: %v", server, local, ns, err)
	}
	return mapped
}

// runStunClient runs Debian's stun-client (`stun`) in namespace ns.
func runStunClient(ctx context.Context, ns string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns, "stun"}, args...)...).CombinedOutput()
	return string(out), err
}

var mappedRE = regexp.MustCompile(`MappedAddress = (\d+\.\d+\.\d+\.\d+):(\d+)`)

// stunClientMapped returns the first MappedAddress stun-client printed.
func stunClientMapped(t *testing.T, out string) netip.AddrPort {
	t.Helper()
	m := mappedRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("stun-client printed no MappedAddress:\n%s", out)
	}
	ip, err := netip.ParseAddr(m[1])
	if err != nil {
		t.Fatal(err)
	}
	port, err := strconv.ParseUint(m[2], 10, 16)
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(ip, uint16(port))
}

// summary drops stun-client's per-packet chatter.
func summary(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if l == "" || strings.HasPrefix(l, "About to send") || strings.HasPrefix(l, "Encoding") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n")
}

// testLog is a slog.Handler that writes the server's records to the test
// log and passes the reason of every "stun request dropped" record to drops.
type testLog struct {
	t     *testing.T
	drops chan string
	mu    sync.Mutex
	attrs []slog.Attr
}

func (l *testLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *testLog) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	reason := ""
	each := func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		if a.Key == "reason" {
			reason = a.Value.String()
		}
		return true
	}
	l.mu.Lock()
	for _, a := range l.attrs {
		each(a)
	}
	l.mu.Unlock()
	r.Attrs(each)
	l.t.Log(b.String())
	if r.Message == "stun request dropped" {
		select {
		case l.drops <- reason:
		default:
		}
	}
	return nil
}

func (l *testLog) WithAttrs(as []slog.Attr) slog.Handler {
	l.mu.Lock()
	defer l.mu.Unlock()
	return &testLog{t: l.t, drops: l.drops, attrs: append(append([]slog.Attr(nil), l.attrs...), as...)}
}

func (l *testLog) WithGroup(string) slog.Handler { return l }
