package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Miniupnpd is Debian's miniupnpd (nftables backend) running as a home
// router's UPnP IGD, NAT-PMP and PCP server inside a network namespace.
type Miniupnpd struct {
	ns, dir string
	proc    *process
	out     SyncBuffer
}

// MiniupnpdOptions configure the router.
type MiniupnpdOptions struct {
	// ExtIf and LANIf are the router's Internet-side and LAN interfaces.
	ExtIf, LANIf string
	// Rules are miniupnpd permission rules, in order ("allow 40000-40099
	// 192.168.77.2/32 40000-40099"); a final "deny" of everything is added.
	Rules []string
	// NATPMP enables NAT-PMP and PCP; UPnP enables the IGD.
	NATPMP, UPnP bool
	// MinLifetime is the shortest PCP/NAT-PMP lease granted (seconds).
	MinLifetime int
}

// MiniupnpdTable is the nftables table (family inet) miniupnpd keeps its rules in;
// StartMiniupnpd creates it with the chains miniupnpd fills, as Debian's
// nft_init.sh does.
const MiniupnpdTable = "jnrelay_upnp"

// StartMiniupnpd writes a configuration into dir, sets up the router's
// nftables chains and starts miniupnpd in the foreground in ns, until
// Stop.
func StartMiniupnpd(ctx context.Context, ns, dir string, opt MiniupnpdOptions) (*Miniupnpd, error) {
	yes := func(b bool) string {
		if b {
			return "yes"
		}
		return "no"
	}
	conf := []string{
		"ext_ifname=" + opt.ExtIf,
		"listening_ip=" + opt.LANIf,
		"http_port=0",
		"enable_natpmp=" + yes(opt.NATPMP),
		"enable_upnp=" + yes(opt.UPnP),
		"secure_mode=yes",
		"system_uptime=yes",
		"notify_interval=60",
		"uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b",
		fmt.Sprintf("min_lifetime=%d", max(opt.MinLifetime, 1)),
		"max_lifetime=86400",
		"lease_file=" + filepath.Join(dir, "upnp.leases"),
		"upnp_table_name=" + MiniupnpdTable,
		"upnp_nat_table_name=" + MiniupnpdTable,
	}
	conf = append(conf, opt.Rules...)
	conf = append(conf, "deny 0-65535 0.0.0.0/0 0-65535")
	path := filepath.Join(dir, "miniupnpd.conf")
	if err := os.WriteFile(path, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return nil, err
	}
	ruleset := fmt.Sprintf(`table inet %[1]s {
	chain forward {
		type filter hook forward priority 0; policy drop;
		ct state established,related accept
		iifname %[2]q oifname %[3]q accept
		jump miniupnpd
	}
	chain miniupnpd {
	}
	chain prerouting {
		type nat hook prerouting priority -100; policy accept;
		jump prerouting_miniupnpd
	}
	chain postrouting {
		type nat hook postrouting priority 100; policy accept;
		jump postrouting_miniupnpd
		iifname %[2]q oifname %[3]q masquerade
	}
	chain prerouting_miniupnpd {
	}
	chain postrouting_miniupnpd {
	}
}
`, MiniupnpdTable, opt.LANIf, opt.ExtIf)
	nft := netnsCommand(ns, "nft", "-f", "-")
	nft.Stdin = strings.NewReader(ruleset)
	if out, err := nft.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("nft in %s: %v: %s", ns, err, out)
	}
	m := &Miniupnpd{ns: ns, dir: dir}
	var err error
	m.proc, err = startProcess(netnsCommand(ns, "miniupnpd", "-d", "-f", path, "-P", filepath.Join(dir, "miniupnpd.pid")), &m.out)
	if err != nil {
		return nil, err
	}
	// Ready once it listens for NAT-PMP/PCP or HTTP (it logs both).
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(m.out.String(), "Listening for NAT-PMP/PCP") && !strings.Contains(m.out.String(), "HTTP listening on port") {
		if m.proc.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			m.Stop()
			return nil, fmt.Errorf("miniupnpd did not start: %s", m.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m, nil
}

// Logs is miniupnpd's output so far.
func (m *Miniupnpd) Logs() string { return m.out.String() }

// Redirects lists the port forwards miniupnpd holds now, as the kernel
// has them: the DNAT rules of its prerouting chain.
func (m *Miniupnpd) Redirects() (string, error) {
	out, err := exec.Command("ip", "netns", "exec", m.ns, "nft", "list", "chain", "inet", MiniupnpdTable, "prerouting_miniupnpd").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("nft list: %v: %s", err, out)
	}
	var rules []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "dnat") {
			rules = append(rules, strings.TrimSpace(l))
		}
	}
	return strings.Join(rules, "\n"), nil
}

// miniupnpdStopGrace is how long miniupnpd may take to exit on SIGTERM
// before SIGKILL. It exits at once unless busy answering a NAT-PMP
// request its rules refuse: it then tries every other external port
// first, for seconds, and reads no signal meanwhile.
const miniupnpdStopGrace = 2 * time.Second

// Stop ends miniupnpd.
func (m *Miniupnpd) Stop() error { return m.proc.stop(miniupnpdStopGrace) }
