// Command rtpload is the benchmark's RTP traffic generator and sink. One
// process plays one side ("a" or "b") of N flows: it sends the side's
// packets towards the relay and receives, checks and times the packets the
// other side's process sent through the relay. The runner (TestBench) starts
// one process per side, each in its own network namespace through
// `ip netns exec`, and merges their JSON results.
//
// # Endpoints: many sources, few sockets
//
// A relay latches each of its ports to the first source address that sends
// to it, so every flow needs its own source address:port, and a relay with
// per-port sockets needs every flow to target its own relay port. One socket
// per flow would make batching impossible (sendmmsg and recvmmsg work on one
// socket) and would make the generator, not the relay, the bottleneck. So
// flows differ by source *address*: -src names a prefix whose every address
// is local in the namespace (the runner adds it as an "AnyIP" local route),
// endpoint i is host (i mod H)+1 of the prefix on port -port-base + i/H,
// and each socket is bound to the wildcard address of its port. The sender
// picks each packet's source address with an IP_PKTINFO control message, so
// one sendmmsg carries up to -batch packets of different flows; replies to
// any address of the prefix arrive on the socket of their port, so one
// recvmmsg drains many flows. With a /25 (126 hosts) 4,000 flows need 32
// sockets.
//
// # Timing
//
// Measured sending starts at -start-at (CLOCK_REALTIME ns, the same for both
// sides) and lasts -duration; packet g of the global round-robin schedule
// (flow g mod N, sequence g div N) is due at start + g·period/N, which
// spreads the flows evenly over each period. One thread does everything: it
// wakes every -tick (500 µs; clock_nanosleep on absolute CLOCK_MONOTONIC
// deadlines), sends everything due, drains every socket that has data, and
// sleeps again. At high load packets therefore leave in bursts of up to a
// tick's worth, as they would from many sources behind one link. Each
// packet carries its send time (read just before its sendmmsg); the sink
// takes the kernel's receive timestamp (SO_TIMESTAMPNS), so the latency
// covers the path through the relay and not the sink's own polling. All
// namespaces share the host clock.
//
// sendmmsg batches are small (-send-batch, 8) on purpose: over veth the
// kernel may carry each packet through the receiving namespace's stack
// inside the sending syscall (it does unless RPS hands that work to another
// core), so the k-th packet of a batch leaves k such delays after the time
// stamped in it. Eight keeps that error small while saving most syscall
// entries.
//
// Before the measurement each side sends one "prime" packet per flow at
// start-up and then five more, 50 ms apart, from 250 ms before -start-at,
// as ICE connectivity checks would: both ends of every relay leg are
// latched when counting starts, and have sent the relay enough to be
// trusted with the other side's media (a relay sends at most a couple of
// datagrams toward a party that has not); primes are not counted.
//
// # Checks
//
// Every received packet is checked: well-formed RTP v2 test packet of the
// other side, right size, arriving at the endpoint of its flow (socket and
// IP_PKTINFO destination) from the address this side sends that flow to (a
// relay answers from the port it is sent to), and not seen before (one bit
// per flow and sequence number). Loss is the other side's "sent" minus this
// side's "received"; our own socket drops (SO_RXQ_OVFL) are reported apart
// so a slow sink is not blamed on the relay.
//
// Nothing is allocated per packet: buffers, message headers and control
// buffers are allocated once and the socket calls are raw syscalls.
package main

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/tests/bench/load"
)

type config struct {
	side      byte
	flows     int
	hosts     [][4]byte // local endpoint addresses
	portBase  int
	targets   []unix.RawSockaddrInet4
	rate      float64 // this side's packets per second per flow
	peerRate  float64 // the other side's, to size the sink's bookkeeping
	size      int
	duration  time.Duration
	startAt   int64 // CLOCK_REALTIME ns
	drain     time.Duration
	tick      time.Duration
	batch     int // recvmmsg
	sendBatch int // sendmmsg
	pt        int
	verify    bool
	rcvbuf    int
	// TURN client mode (turn.go).
	turn        bool
	turnPeers   []unix.RawSockaddrInet4
	turnRelayed string
	// Long-term credentials for a server that asks for them ("" = none).
	turnUser, turnPassword string
}

func main() {
	cfg, err := parseFlags()
	if err != nil {
		fmt.Fprintln(os.Stderr, "rtpload:", err)
		os.Exit(2)
	}
	res, err := run(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "rtpload:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	if err := enc.Encode(res); err != nil {
		fmt.Fprintln(os.Stderr, "rtpload:", err)
		os.Exit(1)
	}
}

func parseFlags() (*config, error) {
	side := flag.String("side", "a", "side this process plays: a or b")
	flows := flag.Int("flows", 1, "number of flows (one endpoint each)")
	src := flag.String("src", "", "IPv4 prefix of the local endpoint addresses (every address local, e.g. an AnyIP route)")
	portBase := flag.Int("port-base", 20000, "UDP port of the first endpoint socket")
	targets := flag.String("targets", "", "file with one ip:port per line: where flow i sends (line i)")
	rate := flag.Float64("rate", 50, "packets per second per flow sent by this side (0: only primes)")
	peerRate := flag.Float64("peer-rate", -1, "packets per second per flow the other side sends (default: -rate)")
	size := flag.Int("size", 172, "UDP payload size in bytes, RTP header included")
	duration := flag.Duration("duration", 5*time.Second, "measured sending time")
	startAt := flag.Int64("start-at", 0, "CLOCK_REALTIME nanoseconds at which measured sending starts (default: now + 1s)")
	drain := flag.Duration("drain", 500*time.Millisecond, "how long the sink keeps receiving after the last send")
	tick := flag.Duration("tick", 500*time.Microsecond, "how often the process wakes to send what is due and drain what arrived")
	batch := flag.Int("batch", 64, "largest number of packets per recvmmsg")
	sendBatch := flag.Int("send-batch", 8, "largest number of packets per sendmmsg (see the package doc: small keeps send timestamps honest)")
	pt := flag.Int("pt", 0, "RTP payload type")
	verify := flag.Bool("verify-payload", false, "also check every filler byte of every packet")
	rcvbuf := flag.Int("rcvbuf", 8<<20, "receive buffer per socket in bytes (SO_RCVBUFFORCE when allowed)")
	turn := flag.Bool("turn", false, "TURN client mode: -targets are the TURN server, one allocation and channel per flow (see turn.go)")
	turnPeers := flag.String("turn-peers", "", "with -turn: file with the peer ip:port of each flow (the other side's endpoints)")
	turnRelayed := flag.String("turn-relayed", "", "with -turn: file to write each flow's relayed ip:port to")
	turnUser := flag.String("turn-user", "", "with -turn: username of the long-term credentials (default: unauthenticated requests)")
	turnPassword := flag.String("turn-password", "", "with -turn-user: its password")
	flag.Parse()

	c := &config{flows: *flows, portBase: *portBase, rate: *rate, peerRate: *peerRate, size: *size,
		duration: *duration, startAt: *startAt, drain: *drain, tick: *tick, batch: *batch, sendBatch: *sendBatch, pt: *pt,
		verify: *verify, rcvbuf: *rcvbuf, turn: *turn, turnRelayed: *turnRelayed,
		turnUser: *turnUser, turnPassword: *turnPassword}
	switch *side {
	case "a":
		c.side = 0
	case "b":
		c.side = 1
	default:
		return nil, fmt.Errorf("-side must be a or b, got %q", *side)
	}
	if c.peerRate < 0 {
		c.peerRate = c.rate
	}
	switch {
	case c.flows < 1 || c.flows > 1<<20:
		return nil, fmt.Errorf("-flows must be 1..%d", 1<<20)
	case c.size < load.HeaderSize || c.size > 1500:
		return nil, fmt.Errorf("-size must be %d..1500", load.HeaderSize)
	case c.rate < 0 || c.rate > 1e7 || c.peerRate > 1e7:
		return nil, errors.New("-rate and -peer-rate must be 0..1e7")
	case c.duration <= 0 || c.duration > time.Hour:
		return nil, errors.New("-duration must be positive and at most 1h")
	case c.batch < 1 || c.batch > 1024 || c.sendBatch < 1 || c.sendBatch > 1024:
		return nil, errors.New("-batch and -send-batch must be 1..1024")
	case c.pt < 0 || c.pt > 127:
		return nil, errors.New("-pt must be 0..127")
	case c.drain < 0 || c.drain > time.Minute || c.tick < 0 || c.tick > time.Second:
		return nil, errors.New("-drain must be 0..1m and -tick 0..1s")
	}
	if c.startAt == 0 {
		c.startAt = time.Now().Add(time.Second).UnixNano()
	}
	pfx, err := netip.ParsePrefix(*src)
	if err != nil || !pfx.Addr().Is4() || pfx.Bits() > 30 {
		return nil, fmt.Errorf("-src must be an IPv4 prefix of /30 or larger, got %q", *src)
	}
	pfx = pfx.Masked()
	n := 1<<(32-pfx.Bits()) - 2 // no network or broadcast address
	a := pfx.Addr().Next()
	for range n {
		c.hosts = append(c.hosts, a.As4())
		a = a.Next()
	}
	sockets := (c.flows + len(c.hosts) - 1) / len(c.hosts)
	if c.portBase < 1 || c.portBase+sockets > 65536 {
		return nil, fmt.Errorf("-port-base %d: %d sockets do not fit below 65536", c.portBase, sockets)
	}
	c.targets, err = readTargets(*targets, c.flows)
	if err != nil {
		return nil, err
	}
	if c.turn {
		if *turnPeers == "" || c.turnRelayed == "" {
			return nil, errors.New("-turn needs -turn-peers and -turn-relayed")
		}
		if c.turnPeers, err = readTargets(*turnPeers, c.flows); err != nil {
			return nil, err
		}
	}
	if (c.turnUser != "" || c.turnPassword != "") && (!c.turn || c.turnUser == "" || c.turnPassword == "") {
		return nil, errors.New("-turn-user and -turn-password go together, with -turn")
	}
	return c, nil
}

// readTargets reads the first n lines of path, each an IPv4 ip:port.
func readTargets(path string, n int) ([]unix.RawSockaddrInet4, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("-targets: %w", err)
	}
	defer f.Close()
	out := make([]unix.RawSockaddrInet4, 0, n)
	sc := bufio.NewScanner(f)
	for sc.Scan() && len(out) < n {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		ap, err := netip.ParseAddrPort(line)
		if err != nil || !ap.Addr().Is4() {
			return nil, fmt.Errorf("-targets line %d: not an IPv4 ip:port: %q", len(out)+1, line)
		}
		out = append(out, rawSockaddr(ap.Addr().As4(), ap.Port()))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("-targets: %w", err)
	}
	if len(out) < n {
		return nil, fmt.Errorf("-targets: %d lines for %d flows", len(out), n)
	}
	return out, nil
}

func rawSockaddr(ip [4]byte, port uint16) unix.RawSockaddrInet4 {
	sa := unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: ip}
	p := (*[2]byte)(unsafe.Pointer(&sa.Port))
	p[0], p[1] = byte(port>>8), byte(port) // network byte order
	return sa
}

// gen is the state of one rtpload process.
type gen struct {
	cfg   *config
	socks []int
	h     int // hosts per socket
	frame int // ChannelData header bytes before each packet (TURN mode)

	// Sender.
	period   int64 // ns between two packets of one flow
	perFlow  uint64
	sent     uint64
	sendErrs uint64
	primes   uint64
	behind   int64
	smsgs    []unix.Mmsghdr
	siov     []unix.Iovec
	sbufs    [][]byte
	sctrl    [][]byte
	pkt      load.Packet
	firstNs  int64
	lastNs   int64
	ep       int
	events   []unix.EpollEvent

	// Sink.
	peerPerFlow uint64
	seen        []uint64 // bit per (flow, seq) of the other side
	maxSeq      []uint32 // highest seq+1 seen per flow (0: none)
	count       []uint32 // distinct packets per flow
	hist        load.Histogram
	ovfl        []uint32 // SO_RXQ_OVFL counter per socket
	rmsgs       []unix.Mmsghdr
	riov        []unix.Iovec
	rbufs       [][]byte
	rctrl       [][]byte
	rnames      []unix.RawSockaddrInet4
	res         load.Result
}

const recvBuf = 2048 // larger than any test packet; a relay that pads is caught as "bad"

func run(cfg *config) (*load.Result, error) {
	g := &gen{cfg: cfg, h: len(cfg.hosts)}
	defer func() {
		for _, fd := range g.socks {
			unix.Close(fd)
		}
		if g.ep > 0 {
			unix.Close(g.ep)
		}
	}()
	if err := g.openSockets(); err != nil {
		return nil, err
	}
	g.prepare()
	if cfg.turn {
		relayed, err := g.turnSetup(cfg.turnPeers)
		if err != nil {
			return nil, err
		}
		if err := writeRelayed(cfg.turnRelayed, relayed); err != nil {
			return nil, err
		}
		fmt.Println("turn-ready") // the runner starts the other side now
	}

	rtNow, monoNow := time.Now().UnixNano(), mono()
	startMono := cfg.startAt - (rtNow - monoNow)
	if startMono-monoNow < int64(100*time.Millisecond) {
		return nil, fmt.Errorf("started %v before -start-at: need at least 100ms to prime the relay", time.Duration(startMono-monoNow))
	}
	if err := g.openEpoll(); err != nil {
		return nil, err
	}
	runtime.LockOSThread()
	// Default timer slack (50 µs) would blur the ticks.
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1000, 0, 0, 0)
	if err := g.loop(startMono); err != nil {
		return nil, err
	}
	g.finish()
	return &g.res, nil
}

func (g *gen) openSockets() error {
	cfg := g.cfg
	n := (cfg.flows + g.h - 1) / g.h
	for j := range n {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("socket: %w", err)
		}
		g.socks = append(g.socks, fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, cfg.rcvbuf); err != nil {
			_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, cfg.rcvbuf)
		}
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 4<<20)
		for _, o := range [][2]int{
			{unix.SOL_SOCKET, unix.SO_TIMESTAMPNS}, // kernel receive time
			{unix.SOL_SOCKET, unix.SO_RXQ_OVFL},    // our own socket drops
			{unix.IPPROTO_IP, unix.IP_PKTINFO},     // destination address of each packet
		} {
			if err := unix.SetsockoptInt(fd, o[0], o[1], 1); err != nil {
				return fmt.Errorf("setsockopt %d/%d: %w", o[0], o[1], err)
			}
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Port: cfg.portBase + j}); err != nil {
			return fmt.Errorf("bind port %d: %w", cfg.portBase+j, err)
		}
	}
	g.ovfl = make([]uint32, n)
	return nil
}

// prepare allocates every buffer the send and receive loops use.
func (g *gen) prepare() {
	cfg := g.cfg
	g.period = int64(math.MaxInt64)
	if cfg.rate > 0 {
		g.period = int64(float64(time.Second) / cfg.rate)
		g.perFlow = uint64(cfg.duration.Seconds() * cfg.rate)
	}
	g.peerPerFlow = uint64(cfg.duration.Seconds() * cfg.peerRate)
	g.seen = make([]uint64, (uint64(cfg.flows)*g.peerPerFlow+63)/64)
	g.maxSeq = make([]uint32, cfg.flows)
	g.count = make([]uint32, cfg.flows)

	pktinfo := unix.CmsgSpace(unix.SizeofInet4Pktinfo)
	g.smsgs = make([]unix.Mmsghdr, cfg.sendBatch)
	g.siov = make([]unix.Iovec, cfg.sendBatch)
	g.sbufs = make([][]byte, cfg.sendBatch)
	g.sctrl = make([][]byte, cfg.sendBatch)
	if cfg.turn {
		g.frame = channelDataHeader
	}
	for k := range cfg.sendBatch {
		b := make([]byte, g.frame+cfg.size)
		for i := g.frame + load.HeaderSize; i < len(b); i++ {
			b[i] = load.FillByte
		}
		if cfg.turn {
			binary.BigEndian.PutUint16(b[0:], turnChannel)
			binary.BigEndian.PutUint16(b[2:], uint16(cfg.size))
		}
		g.sbufs[k] = b
		g.siov[k].Base = &b[0]
		g.siov[k].SetLen(len(b))
		ctl := make([]byte, pktinfo)
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
		h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
		g.sctrl[k] = ctl
		m := &g.smsgs[k].Hdr
		m.Namelen = unix.SizeofSockaddrInet4
		m.Iov = &g.siov[k]
		m.SetIovlen(1)
		m.Control = &ctl[0]
		m.SetControllen(len(ctl))
	}

	rctl := unix.CmsgSpace(16) + unix.CmsgSpace(unix.SizeofInet4Pktinfo) + unix.CmsgSpace(4) + 64
	g.rmsgs = make([]unix.Mmsghdr, cfg.batch)
	g.riov = make([]unix.Iovec, cfg.batch)
	g.rbufs = make([][]byte, cfg.batch)
	g.rctrl = make([][]byte, cfg.batch)
	g.rnames = make([]unix.RawSockaddrInet4, cfg.batch)
	for k := range cfg.batch {
		g.rbufs[k] = make([]byte, recvBuf)
		g.riov[k].Base = &g.rbufs[k][0]
		g.riov[k].SetLen(recvBuf)
		g.rctrl[k] = make([]byte, rctl)
		m := &g.rmsgs[k].Hdr
		m.Name = (*byte)(unsafe.Pointer(&g.rnames[k]))
		m.Iov = &g.riov[k]
		m.SetIovlen(1)
		m.Control = &g.rctrl[k][0]
	}

	g.pkt = load.Packet{PT: byte(cfg.pt), Side: cfg.side}
	r := &g.res
	r.Side = string('a' + rune(cfg.side))
	r.Flows, r.Size, r.Rate, r.Duration = cfg.flows, cfg.size, cfg.rate, cfg.duration.Seconds()
	r.Planned = uint64(cfg.flows) * g.perFlow
}

// mono reads CLOCK_MONOTONIC. Like every system call of the media path it
// is raw (no Go scheduler hand-off): the process has one goroutine of work
// and these calls do not block, except the sleep, which is meant to.
func mono() int64 {
	var ts unix.Timespec
	_, _, _ = unix.RawSyscall(unix.SYS_CLOCK_GETTIME, unix.CLOCK_MONOTONIC, uintptr(unsafe.Pointer(&ts)), 0)
	return ts.Nano()
}

// sleepUntil sleeps until the CLOCK_MONOTONIC time monoNs. It is a raw
// system call, invisible to the Go scheduler: with the ordinary wrapper
// every sleep also wakes the runtime's monitor thread, which doubled the
// cost of a tick here. Nothing else runs in this process meanwhile.
func sleepUntil(monoNs int64) {
	ts := unix.NsecToTimespec(monoNs)
	for {
		_, _, errno := unix.RawSyscall6(unix.SYS_CLOCK_NANOSLEEP, unix.CLOCK_MONOTONIC, unix.TIMER_ABSTIME,
			uintptr(unsafe.Pointer(&ts)), 0, 0, 0)
		if errno != unix.EINTR {
			return
		}
	}
}

// sendPrimes sends one uncounted packet per flow so the relay latches both
// ends of every leg before the measurement.
func (g *gen) sendPrimes() {
	n := uint64(g.cfg.flows)
	for i := uint64(0); i < n; {
		i += g.sendBatch(i, n, n, true)
	}
}

// loop is the process's one thread of work. Every tick it sends what the
// schedule has due and drains whatever arrived, then sleeps until the next
// tick: one wake-up per tick whatever the load (in a VM a wake-up costs
// tens of µs, and waking per received packet made the generator, not the
// relay, the limit). Measured latency does not depend on the tick: it ends
// at the kernel's receive timestamp. Side b ticks half a tick after side a
// so the two sides' bursts do not coincide.
func (g *gen) loop(startMono int64) error {
	cfg := g.cfg
	tick := max(int64(cfg.tick), 1000)
	total := g.res.Planned
	n := uint64(cfg.flows)
	// The schedule is bounded: whatever is not sent by sendStop is reported
	// as not sent rather than stretching the run.
	sendStop := startMono + int64(cfg.duration) + int64(time.Second)
	recvEnd := startMono + int64(cfg.duration) + int64(cfg.drain)
	const primeRounds, primeGap = 5, int64(50 * time.Millisecond)
	primeAt := startMono - primeRounds*primeGap
	due := func(now int64) uint64 { // every packet i with start + i·period/N ≤ now
		d := uint64((now-startMono)/g.period)*n + uint64((now-startMono)%g.period*int64(n)/g.period) + 1
		return min(d, total)
	}
	at := func(i uint64) int64 { return startMono + int64(i/n)*g.period + int64(i%n)*g.period/int64(n) }

	g.sendPrimes()
	primed := 0 // prime rounds sent before the measurement
	var next uint64
	wake := startMono - (startMono-mono())/tick*tick + int64(cfg.side)*tick/2
	for {
		now := mono()
		if primed < primeRounds && now >= primeAt+int64(primed)*primeGap {
			g.sendPrimes()
			primed++
		}
		if next < total && now >= startMono {
			if now > sendStop {
				total = next // give up on the rest
			} else if d := due(now); next < d {
				g.behind = max(g.behind, now-at(next))
				for next < d {
					next += g.sendBatch(next, d, n, false)
				}
			}
			if next >= total {
				recvEnd = max(recvEnd, now+int64(cfg.drain))
			}
		}
		if err := g.drain(); err != nil {
			return err
		}
		if next >= total && now >= recvEnd {
			break
		}
		if wake += tick; wake < now {
			wake = now + tick // late: skip ticks rather than spin
		}
		sleepUntil(wake)
	}
	g.res.SendSeconds = float64(g.lastNs-g.firstNs) / 1e9
	return nil
}

// sendBatch sends packets from..to-1 of the schedule (flow = i mod n,
// seq = i div n) that share the first one's socket, at most one batch; it
// returns how many it consumed (sent or failed). Primes use n = flows and
// seq 0.
func (g *gen) sendBatch(from, to, n uint64, prime bool) uint64 {
	cfg := g.cfg
	flow0 := int(from % n)
	sock := flow0 / g.h
	k := 0
	now := time.Now().UnixNano()
	for i := from; i < to && k < cfg.sendBatch; i++ {
		flow := int(i % n)
		if flow/g.h != sock {
			break
		}
		p := &g.pkt
		p.Flow, p.Seq, p.SendNs, p.Flags = uint32(flow), uint32(i/n), now, 0
		if prime {
			p.Seq, p.Flags = 0, load.FlagPrime
		}
		p.SSRC = load.SSRC(cfg.side, p.Flow)
		load.Encode(g.sbufs[k][g.frame:], p)
		g.smsgs[k].Hdr.Name = (*byte)(unsafe.Pointer(&cfg.targets[flow]))
		info := (*unix.Inet4Pktinfo)(unsafe.Pointer(&g.sctrl[k][unix.CmsgLen(0)]))
		info.Spec_dst = cfg.hosts[flow%g.h] // the flow's source address
		k++
	}
	r, _, errno := unix.RawSyscall6(unix.SYS_SENDMMSG, uintptr(g.socks[sock]),
		uintptr(unsafe.Pointer(&g.smsgs[0])), uintptr(k), 0, 0, 0)
	sent := uint64(r)
	if errno != 0 {
		// The first message failed: count it and move on, so a persistent
		// error cannot stall the schedule.
		sent = 0
		if !prime {
			g.sendErrs++
		}
		if k > 0 {
			return 1
		}
	}
	if prime {
		g.primes += sent
	} else if sent > 0 {
		if g.sent == 0 {
			g.firstNs = now
		}
		g.lastNs = now
		g.sent += sent
	}
	return sent
}

// openEpoll registers every socket with an epoll instance, which tells
// the loop which sockets have data.
func (g *gen) openEpoll() error {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll_create1: %w", err)
	}
	g.ep = ep
	for j, fd := range g.socks {
		ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(j)}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}
	g.events = make([]unix.EpollEvent, len(g.socks))
	return nil
}

// drain receives everything queued on every socket, without waiting.
func (g *gen) drain() error {
	r, _, errno := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(g.ep), uintptr(unsafe.Pointer(&g.events[0])),
		uintptr(len(g.events)), 0, 0, 0)
	switch errno {
	case 0:
	case unix.EINTR:
		return nil
	default:
		return fmt.Errorf("epoll_pwait: %w", errno)
	}
	for _, ev := range g.events[:r] {
		for {
			got, err := g.recvSocket(int(ev.Fd))
			if err != nil {
				return err
			}
			if got < len(g.rmsgs) {
				break
			}
		}
	}
	return nil
}

// recvSocket receives one batch from socket j. MSG_WAITFORONE returns as
// soon as one datagram is read, with whatever else is already queued,
// instead of waiting to fill the batch; MSG_DONTWAIT makes an empty socket
// return at once.
func (g *gen) recvSocket(j int) (int, error) {
	for k := range g.rmsgs {
		m := &g.rmsgs[k].Hdr
		m.Namelen = unix.SizeofSockaddrInet4
		m.SetControllen(len(g.rctrl[k]))
		m.Flags = 0
	}
	r, _, errno := unix.RawSyscall6(unix.SYS_RECVMMSG, uintptr(g.socks[j]),
		uintptr(unsafe.Pointer(&g.rmsgs[0])), uintptr(len(g.rmsgs)), unix.MSG_WAITFORONE|unix.MSG_DONTWAIT, 0, 0)
	switch errno {
	case 0:
	case unix.EAGAIN, unix.EINTR:
		return 0, nil
	default:
		return 0, fmt.Errorf("recvmmsg: %w", errno)
	}
	fallback := time.Now().UnixNano()
	for k := range int(r) {
		g.account(j, k, fallback)
	}
	return int(r), nil
}

// account checks and counts received message k of socket j.
func (g *gen) account(j, k int, fallbackNs int64) {
	cfg, res := g.cfg, &g.res
	m := &g.rmsgs[k]
	if m.Hdr.Flags&unix.MSG_TRUNC != 0 {
		res.Truncated++
		return
	}
	rxNs, dst, haveDst := fallbackNs, [4]byte{}, false
	ctl := g.rctrl[k][:m.Hdr.Controllen]
	for len(ctl) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&ctl[0]))
		if h.Len < unix.SizeofCmsghdr || uint64(h.Len) > uint64(len(ctl)) {
			break
		}
		data := ctl[unix.CmsgLen(0):h.Len]
		switch {
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SCM_TIMESTAMPNS && len(data) >= 16:
			ts := (*unix.Timespec)(unsafe.Pointer(&data[0]))
			rxNs = ts.Nano()
		case h.Level == unix.IPPROTO_IP && h.Type == unix.IP_PKTINFO && len(data) >= unix.SizeofInet4Pktinfo:
			dst, haveDst = (*unix.Inet4Pktinfo)(unsafe.Pointer(&data[0])).Addr, true
		case h.Level == unix.SOL_SOCKET && h.Type == unix.SO_RXQ_OVFL && len(data) >= 4:
			if v := *(*uint32)(unsafe.Pointer(&data[0])); v > g.ovfl[j] {
				g.ovfl[j] = v
			}
		}
		next := unix.CmsgSpace(int(h.Len) - unix.CmsgLen(0))
		if next > len(ctl) {
			break
		}
		ctl = ctl[next:]
	}
	b := g.rbufs[k][:m.Len]
	if cfg.turn {
		// ChannelData: our channel, our length, at most 3 bytes of padding.
		if len(b) < channelDataHeader || binary.BigEndian.Uint16(b) != turnChannel ||
			int(binary.BigEndian.Uint16(b[2:])) != cfg.size || len(b) > channelDataHeader+cfg.size+3 {
			res.Bad++
			return
		}
		b = b[channelDataHeader : channelDataHeader+cfg.size]
	}
	var p load.Packet
	if !load.Decode(b, &p) || p.Side == cfg.side || int(p.Flow) >= cfg.flows || len(b) != cfg.size {
		res.Bad++
		return
	}
	if cfg.verify {
		for _, c := range b[load.HeaderSize:] {
			if c != load.FillByte {
				res.Bad++
				return
			}
		}
	}
	flow := int(p.Flow)
	if j != flow/g.h || !haveDst || dst != cfg.hosts[flow%g.h] || g.rnames[k] != cfg.targets[flow] {
		res.Misrouted++
		return
	}
	if p.Flags&load.FlagPrime != 0 {
		res.PrimesRecv++
		return
	}
	if uint64(p.Seq) >= g.peerPerFlow {
		res.Bad++
		return
	}
	bit := uint64(flow)*g.peerPerFlow + uint64(p.Seq)
	if g.seen[bit/64]&(1<<(bit%64)) != 0 {
		res.Duplicates++
		return
	}
	g.seen[bit/64] |= 1 << (bit % 64)
	res.Received++
	g.count[flow]++
	if p.Seq+1 < g.maxSeq[flow] {
		res.Reordered++
	} else {
		g.maxSeq[flow] = p.Seq + 1
	}
	g.hist.Add(rxNs - p.SendNs)
}

func (g *gen) finish() {
	r := &g.res
	r.Sent, r.SendErrors, r.PrimesSent, r.SendBehind = g.sent, g.sendErrs, g.primes, g.behind
	for _, v := range g.ovfl {
		r.SinkDrops += uint64(v)
	}
	for _, c := range g.count {
		if uint64(c) < g.peerPerFlow {
			r.Incomplete++
		}
	}
	r.LatP50Ns, r.LatP99Ns, r.LatMaxNs = g.hist.Quantile(0.5), g.hist.Quantile(0.99), g.hist.Max()
	r.LatencyHist = g.hist.Sparse()
}
