// Command dpbench runs relayd's data plane (relayd/channel) alone, for the
// side-by-side benchmark: it allocates -channels channels, writes their
// ports, and relays until SIGTERM or SIGINT, then prints the data plane's
// totals. It uses only the Manager's public API (New, Allocate, Totals,
// Capacity, Close), so it keeps working while the internals change.
//
// Output on stdout, one JSON object per line:
//
//	{"ready":true,"channels":N,"alloc_seconds":S,"allocs_per_second":R}
//	{"relayed":..,"dropped":{..},"active":..,"kernel_forwarded":..}   (after the signal)
//
// and in -ports, one line per channel: "LOCALPORT REMOTEPORT".
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jnrelay/jnrelay/kernel"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

func main() {
	listen := flag.String("listen", "127.0.0.1", "address the relay ports bind to")
	portMin := flag.Int("port-min", 20000, "relay port range, inclusive")
	portMax := flag.Int("port-max", 59999, "")
	channels := flag.Int("channels", 100, "channels to allocate")
	ports := flag.String("ports", "", "file to write the channels' ports to (one \"local remote\" line each)")
	expire := flag.Duration("expire", time.Hour, "channel inactivity timeout (long: benchmark channels must not expire between steps)")
	fastPath := flag.String("fast-path", "off", "in-kernel fast path: off, auto, ebpf, flowtable or nftables (needs root and net.ipv4.ip_forward=1)")
	sockets := flag.String("sockets", "per_port", "per_port, steered (one socket per worker through BPF sk_lookup; needs root) or auto, as relayd's channel.sockets")
	// The hot flow (10,000 datagrams/s one way through one port) is five
	// times relayd's default packet ceiling, which is for calls.
	maxPPS := flag.Int("max-pps", 100000, "packet-rate ceiling per relay port (relayd's default is 2000)")
	offloadSocket := flag.String("offload-socket", "", "the offload broker's socket (relayd -offload-broker), through which an unprivileged dpbench gets the fast path, as relayd's channel.offload_socket")
	flag.Parse()
	if err := run(*listen, *portMin, *portMax, *channels, *ports, *expire, channel.FastPathMode(*fastPath), channel.SocketsMode(*sockets), *maxPPS, *offloadSocket); err != nil {
		fmt.Fprintln(os.Stderr, "dpbench:", err)
		os.Exit(1)
	}
}

func run(listen string, portMin, portMax, channels int, portsFile string, expire time.Duration, fastPath channel.FastPathMode, sockets channel.SocketsMode, maxPPS int, offloadSocket string) error {
	addr, err := netip.ParseAddr(listen)
	if err != nil {
		return fmt.Errorf("-listen: %w", err)
	}
	m, err := channel.New(channel.Config{Listen: addr, Sockets: sockets, OffloadSocket: offloadSocket, Settings: channel.Settings{PortMin: portMin, PortMax: portMax,
		Expire: expire, LatchGrace: 5 * time.Second, FastPath: fastPath, MaxPPS: maxPPS},
		GSO: kernel.Detect().GSO, // as relayd's daemon sets it
		// Warnings (a fast path leg that stays in userspace) on stderr.
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		return err
	}
	defer m.Close()
	if channels > m.Capacity() {
		return fmt.Errorf("%d channels do not fit in ports %d-%d (capacity %d)", channels, portMin, portMax, m.Capacity())
	}
	// Signals are caught before the first channel exists so a runner that
	// stops us early still gets the totals.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	infos := make([]channel.Info, 0, channels)
	t0 := time.Now()
	for range channels {
		info, err := m.Allocate()
		if err != nil {
			return fmt.Errorf("allocate channel %d: %w", len(infos)+1, err)
		}
		infos = append(infos, info)
	}
	elapsed := time.Since(t0)

	if portsFile != "" {
		f, err := os.Create(portsFile)
		if err != nil {
			return err
		}
		w := bufio.NewWriter(f)
		for _, in := range infos {
			fmt.Fprintf(w, "%d %d\n", in.LocalPort, in.RemotePort)
		}
		if err := w.Flush(); err != nil {
			f.Close()
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	enc := json.NewEncoder(os.Stdout)
	ready := struct {
		Ready    bool    `json:"ready"` // first: the runner waits for a line starting {"ready"
		Channels int     `json:"channels"`
		Seconds  float64 `json:"alloc_seconds"`
		PerSec   float64 `json:"allocs_per_second"`
	}{Ready: true, Channels: channels, Seconds: elapsed.Seconds()}
	if elapsed > 0 {
		ready.PerSec = float64(channels) / elapsed.Seconds()
	}
	if err := enc.Encode(ready); err != nil {
		return err
	}

	<-sigs
	t := m.Totals()
	dropped := map[string]uint64{}
	for r, n := range t.Stats.Dropped {
		dropped[channel.DropReason(r).String()] = n
	}
	return enc.Encode(map[string]any{
		"relayed": t.Stats.Packets[channel.LocalToRemote] + t.Stats.Packets[channel.RemoteToLocal],
		"dropped": dropped, "active": t.Active,
		"kernel_forwarded": t.Stats.Offloaded[channel.LocalToRemote] + t.Stats.Offloaded[channel.RemoteToLocal],
		"segmented":        t.Segmented,
	})
}
