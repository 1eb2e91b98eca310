package image

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// The fast paths side by side in the guest: make bench-image (never part
// of make test).
var (
	benchOn      = flag.Bool("image.bench", false, "run TestArm64ImageFastPathCPU: guest CPU per relayed packet, userspace and each fast path")
	benchPackets = flag.Int("image.bench.packets", 5000, "packets per stream (RTP and RTCP, each way: 4 streams) in the measured load")
	benchGap     = flag.Duration("image.bench.interval", 2*time.Millisecond, "interval between a stream's packets")
	benchOut     = flag.String("image.bench.out", "", "also write the table (markdown) to this file")
)

// benchModes are the rows: userspace first, the reference of the ratios.
var benchModes = []config.FastPath{config.FastPathOff, config.FastPathNftables, config.FastPathFlowtable, config.FastPathEBPF}

// cpuTicks is the guest's first /proc/stat line, in USER_HZ ticks.
type cpuTicks struct{ user, system, softirq, busy uint64 }

func parseCPU(t *testing.T, lines []string) cpuTicks {
	t.Helper()
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 8 || f[0] != "cpu" {
			continue
		}
		var v [8]uint64
		for i := range v {
			v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
		}
		// user nice system idle iowait irq softirq steal
		return cpuTicks{user: v[0] + v[1], system: v[2] + v[5], softirq: v[6], busy: v[0] + v[1] + v[2] + v[5] + v[6] + v[7]}
	}
	t.Fatalf("no cpu line in /proc/stat: %q", lines)
	return cpuTicks{}
}

func (a cpuTicks) sub(b cpuTicks) cpuTicks {
	return cpuTicks{a.user - b.user, a.system - b.system, a.softirq - b.softirq, a.busy - b.busy}
}

// benchRow is one mode's measurement.
type benchRow struct {
	mode          config.FastPath
	by            string
	sent, relayed int
	idle, load    cpuTicks // over windows of the same length
	median        time.Duration
}

// TestArm64ImageFastPathCPU boots the image once per mode (off, nftables,
// flowtable, ebpf) and relays the same load through one call: 4 streams
// (RTP and RTCP, each way) of -image.bench.packets packets every
// -image.bench.interval, with the legs already in the kernel. The guest's
// busy CPU ticks (/proc/stat, USER_HZ) during the load, minus those of an
// idle window as long, divided by the packets relayed, is the CPU cost per
// relayed packet. Under TCG emulation absolute times mean nothing (every
// guest instruction is translated); the ratios between the modes are what
// the table is for.
func TestArm64ImageFastPathCPU(t *testing.T) {
	if !*benchOn {
		t.Skip("a benchmark: make bench-image (go test ./tests/image -run TestArm64ImageFastPathCPU -args -image.bench)")
	}
	dir, qemu := image(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	srv := startProsody(ctx, t)
	var rows []benchRow
	for _, mode := range benchModes {
		t.Run(string(mode), func(t *testing.T) {
			rows = append(rows, benchMode(ctx, t, dir, qemu, srv, mode))
		})
	}
	table := benchTable(rows)
	t.Logf("guest CPU per relayed packet:\n%s", table)
	if *benchOut != "" {
		if err := os.WriteFile(*benchOut, []byte(table), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func benchMode(ctx context.Context, t *testing.T, dir, qemu string, srv *harness.XMPPServer, mode config.FastPath) benchRow {
	base := freeRelayPorts(t)
	cfg := imageConfig(srv, base)
	cfg.Channel.FastPath = mode
	cfg.Channel.ExpireSeconds = 120 // the idle window must not end the call
	cfg.Log.Level = "debug"         // "leg offloaded"
	v := boot(t, dir, qemu, marshal(t, cfg), channelForwards(base), "sysctl.net.ipv4.ip_forward=1")
	row := benchRow{mode: mode, by: "relayd (userspace)"}
	bootCtx, bootCancel := context.WithTimeout(ctx, 120*time.Second)
	defer bootCancel()
	if mode != config.FastPathOff {
		on, err := v.console.waitLog(bootCtx, "in-kernel fast path on: latched legs are forwarded by the kernel")
		if err != nil {
			t.Fatal(err)
		}
		row.by = on.Str("by")
	}
	if _, err := v.console.waitLog(bootCtx, "xmpp component online"); err != nil {
		t.Fatal(err)
	}
	c := startCall(ctx, t, srv)
	// Warm up until both legs are in the kernel (and, for the flowtable,
	// past the rules' first datagrams).
	for try := 0; ; try++ {
		warmUp(ctx, t, c)
		if mode == config.FastPathOff || countLogs(v, "leg offloaded") >= 2 {
			break
		}
		if try == 20 {
			t.Fatalf("the call's legs did not reach the kernel after %d warm-up bursts", try+1)
		}
	}
	if mode != config.FastPathOff {
		warmUp(ctx, t, c)
	}
	c.drain(ctx)
	had := c.received()

	// The measured load, then an idle window of the same length.
	start := parseCPU(t, showProc(ctx, t, v, "/proc/stat"))
	began := time.Now()
	c.send(ctx, t, harness.Pace{Count: *benchPackets, Interval: *benchGap})
	row.sent = 4 * *benchPackets
	c.drain(ctx)
	end := parseCPU(t, showProc(ctx, t, v, "/proc/stat"))
	window := time.Since(began)
	row.load = end.sub(start)
	got := c.received()
	for i := range got {
		row.relayed += got[i] - had[i]
	}
	row.median = c.callee.RTPStats().Sources["caller"].Latency(0.5)

	idleStart := parseCPU(t, showProc(ctx, t, v, "/proc/stat"))
	select {
	case <-time.After(window): // a measurement window, not a synchronisation
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	row.idle = parseCPU(t, showProc(ctx, t, v, "/proc/stat")).sub(idleStart)
	t.Logf("%s (%s): %d of %d packets relayed in %s; busy ticks load %+v, idle %+v", mode, row.by, row.relayed, row.sent,
		window.Round(time.Millisecond), row.load, row.idle)
	if row.relayed < row.sent/2 {
		t.Errorf("only %d of %d packets relayed: the load is beyond this guest, lower -image.bench.packets or raise -image.bench.interval", row.relayed, row.sent)
	}
	return row
}

// received counts what each of c's four sockets got from the other party.
func (c call) received() [4]int {
	return [4]int{c.callee.RTPStats().Sources["caller"].Packets, c.callee.RTCPStats().Sources["caller"].Packets,
		c.caller.RTPStats().Sources["callee"].Packets, c.caller.RTCPStats().Sources["callee"].Packets}
}

// countLogs counts relayd's log records with message msg so far.
func countLogs(v *vm, msg string) int {
	n := 0
	for _, l := range strings.Split(v.console.String(), "\n") {
		if rec, ok := record(strings.TrimRight(l, "\r")); ok && rec.Msg() == msg {
			n++
		}
	}
	return n
}

// tickUs is a USER_HZ tick (100 Hz) in microseconds.
const tickUs = 10_000

// benchTable renders rows as markdown, ratios against the first row.
func benchTable(rows []benchRow) string {
	var b strings.Builder
	fmt.Fprintln(&b, "| fast_path | forwarded by | packets relayed (of sent) | guest CPU, load − idle (ticks: user / system+irq / softirq) | CPU per packet (emulated) | vs userspace | median one-way |")
	fmt.Fprintln(&b, "|---|---|---|---|---|---|---|")
	var ref float64
	for i, r := range rows {
		busy := float64(r.load.busy) - float64(r.idle.busy)
		per := 0.0
		if r.relayed > 0 {
			per = busy * tickUs / float64(r.relayed)
		}
		if i == 0 {
			ref = per
		}
		ratio := "—"
		if ref > 0 {
			ratio = fmt.Sprintf("%.2f×", per/ref)
		}
		d := r.load.sub(r.idle)
		fmt.Fprintf(&b, "| %s | %s | %d (%d) | %.0f (%d / %d / %d) | %.0f µs | %s | %s |\n", r.mode, r.by, r.relayed, r.sent, busy,
			int64(d.user), int64(d.system), int64(d.softirq), per, ratio, r.median.Round(10*time.Microsecond))
	}
	return b.String()
}
