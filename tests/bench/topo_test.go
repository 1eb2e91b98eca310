package bench

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The benchmark's topology: the caller side "a", the relay "r" and the
// callee side "b", each a network namespace, joined by two veth pairs:
//
//	a (eth0 203.0.113.2/30) ── (ra 203.0.113.1/30) r (rb 203.0.113.5/30) ── (eth0 203.0.113.6/30) b
//
// The relay's service address 203.0.113.100 sits on r's loopback. Side a's
// endpoints use every address of 198.51.100.0/25 and side b's every
// address of 198.51.100.128/25, each prefix an "AnyIP" local route on its
// namespace's loopback (so thousands of flows get distinct source
// addresses without thousands of `ip addr` entries, see cmd/rtpload); r
// routes each prefix to its side, so r needs two neighbour entries in all.
//
// Packet processing is steered to the core of the program that owns the
// packets (RPS on each veth's receive queue): what arrives in r is
// processed on the relay's core, what arrives in a and b on the
// generators' core. Without it a veth delivers a packet on the core that
// sent it, so the relay's whole receive path would be charged to (and
// limited by) the generators' core, and the sinks' receive path to the
// relay's core. With it the relay's core carries what a router's core would:
// receive, relay, send.
//
// The same topology gives the baseline: with IPv4 forwarding on in r, side
// a sends straight to side b's endpoints and the kernel forwards across r,
// over the same two veths, with no userspace relay on the path. Forwarding
// is off in every relay run.
//
// Only TEST-NET addresses are used, inside namespaces the test created;
// nothing is routed out of them.
const (
	relayAddr = "203.0.113.100"
	srcA      = "198.51.100.0/25"
	srcB      = "198.51.100.128/25"
	portBaseA = 30000 // first endpoint socket port on side a
	portBaseB = 40000 // and on side b
)

type topo struct {
	prefix        string
	nsA, nsR, nsB string
}

func newTopo(t testing.TB) *topo {
	t.Helper()
	id := fmt.Sprintf("jnbench-%x%04x", os.Getpid(), rand.Uint32N(1<<16))
	tp := &topo{prefix: id, nsA: id + "-a", nsR: id + "-r", nsB: id + "-b"}
	var made []string
	t.Cleanup(func() {
		for _, ns := range made {
			killNetnsProcs(t, ns)
			if err := ip("netns", "del", ns); err != nil {
				t.Error(err)
			}
		}
	})
	for _, ns := range []string{tp.nsA, tp.nsR, tp.nsB} {
		if err := ip("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		made = append(made, ns)
	}
	steps := [][]string{
		{"-n", tp.nsR, "link", "add", "ra", "type", "veth", "peer", "name", "eth0", "netns", tp.nsA},
		{"-n", tp.nsR, "link", "add", "rb", "type", "veth", "peer", "name", "eth0", "netns", tp.nsB},
		{"-n", tp.nsR, "addr", "add", relayAddr + "/32", "dev", "lo"},
		{"-n", tp.nsR, "addr", "add", "203.0.113.1/30", "dev", "ra"},
		{"-n", tp.nsR, "addr", "add", "203.0.113.5/30", "dev", "rb"},
		{"-n", tp.nsA, "addr", "add", "203.0.113.2/30", "dev", "eth0"},
		{"-n", tp.nsB, "addr", "add", "203.0.113.6/30", "dev", "eth0"},
	}
	for _, ns := range []string{tp.nsA, tp.nsR, tp.nsB} {
		steps = append(steps, []string{"-n", ns, "link", "set", "lo", "up"})
	}
	steps = append(steps,
		[]string{"-n", tp.nsR, "link", "set", "ra", "up"},
		[]string{"-n", tp.nsR, "link", "set", "rb", "up"},
		[]string{"-n", tp.nsA, "link", "set", "eth0", "up"},
		[]string{"-n", tp.nsB, "link", "set", "eth0", "up"},
		[]string{"-n", tp.nsA, "route", "add", "default", "via", "203.0.113.1"},
		[]string{"-n", tp.nsB, "route", "add", "default", "via", "203.0.113.5"},
		[]string{"-n", tp.nsA, "route", "add", "local", srcA, "dev", "lo"},
		[]string{"-n", tp.nsB, "route", "add", "local", srcB, "dev", "lo"},
		[]string{"-n", tp.nsR, "route", "add", srcA, "via", "203.0.113.2"},
		[]string{"-n", tp.nsR, "route", "add", srcB, "via", "203.0.113.6"},
	)
	for _, s := range steps {
		if err := ip(s...); err != nil {
			t.Fatal(err)
		}
	}
	// No IPv6 (no router solicitations or DAD on the links: quieter
	// measurements), and forwarding off until a baseline asks for it.
	for _, ns := range []string{tp.nsA, tp.nsR, tp.nsB} {
		if err := sysctl(ns, "net.ipv6.conf.all.disable_ipv6", "1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := tp.forwarding(false); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct{ ns, dev, core string }{
		{tp.nsR, "ra", relayCore}, {tp.nsR, "rb", relayCore}, {tp.nsA, "eth0", genCore}, {tp.nsB, "eth0", genCore},
	} {
		if err := steer(q.ns, q.dev, q.core); err != nil {
			t.Fatal(err)
		}
	}
	return tp
}

// forwarding turns IPv4 forwarding in the relay namespace on (baseline) or
// off (relay runs).
func (tp *topo) forwarding(on bool) error {
	v := "0"
	if on {
		v = "1"
	}
	return sysctl(tp.nsR, "net.ipv4.ip_forward", v)
}

// endpoint is the address of flow i's endpoint on a side, as cmd/rtpload
// computes it: host (i mod H)+1 of the side's prefix, port base + i/H.
func endpoint(prefix string, portBase, i int) netip.AddrPort {
	p := netip.MustParsePrefix(prefix)
	hosts := 1<<(32-p.Bits()) - 2
	a := p.Addr()
	for range i%hosts + 1 {
		a = a.Next()
	}
	return netip.AddrPortFrom(a, uint16(portBase+i/hosts))
}

func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func sysctl(ns, key, value string) error {
	out, err := exec.Command("ip", "netns", "exec", ns, "sysctl", "-qw", key+"="+value).CombinedOutput()
	if err != nil {
		return fmt.Errorf("sysctl %s=%s in %s: %w: %s", key, value, ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// steer sets the RPS CPU mask of dev's receive queue in ns to one core.
// `ip netns exec` mounts the namespace's own /sys.
func steer(ns, dev, core string) error {
	n, err := strconv.Atoi(core)
	if err != nil {
		return err
	}
	path := "/sys/class/net/" + dev + "/queues/rx-0/rps_cpus"
	out, err := exec.Command("ip", "netns", "exec", ns, "sh", "-c", fmt.Sprintf("echo %x > %s", 1<<n, path)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("RPS on %s in %s: %w: %s", dev, ns, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// killNetnsProcs kills processes still running in ns (a crashed step),
// reporting each: every process the benchmark starts is stopped by PID.
func killNetnsProcs(t testing.TB, ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		t.Errorf("process %d left in namespace %s; killing it", pid, ns)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
