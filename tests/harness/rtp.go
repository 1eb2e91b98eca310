package harness

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Packet layout. RTP: 12-byte header (V=2, no CSRC/extension) followed by
// the harness payload: send time (int64 Unix ns) and the sender's Tag, then
// zero padding up to the requested size. RTCP: a receiver report (V=2,
// RC=0, PT=201, length 6 = 28 bytes) whose 20-byte profile-specific
// extension carries send time, Tag and a 32-bit sequence number.
const (
	rtpHeaderLen   = 12
	rtpMinLen      = rtpHeaderLen + 16
	rtcpLen        = 28
	rtcpTypeRR     = 201
	DefaultRTPSize = rtpHeaderLen + 160 // PCMU, 20 ms
	// DefaultPayloadType is PCMU.
	DefaultPayloadType = 0
)

// Tag identifies the sender of a harness packet: up to 8 bytes, zero padded.
type Tag [8]byte

// NewTag returns the tag for s; s is truncated to 8 bytes.
func NewTag(s string) Tag {
	var t Tag
	copy(t[:], s)
	return t
}

// String returns the tag without its zero padding.
func (t Tag) String() string {
	n := len(t)
	for n > 0 && t[n-1] == 0 {
		n--
	}
	return string(t[:n])
}

// Packet is a decoded harness RTP or RTCP packet.
type Packet struct {
	RTCP        bool
	PayloadType uint8  // RTP payload type (RTCP: 201)
	Seq         uint32 // RTP: 16-bit sequence number; RTCP: 32-bit counter
	Timestamp   uint32 // RTP only
	SSRC        uint32
	SentAt      int64 // sender's clock, Unix ns
	Tag         Tag
}

// AppendRTP appends p encoded as an RTP packet of size bytes (at least 28).
func (p Packet) AppendRTP(b []byte, size int) []byte {
	size = max(size, rtpMinLen)
	b = append(b, 0x80, p.PayloadType&0x7f)
	b = binary.BigEndian.AppendUint16(b, uint16(p.Seq))
	b = binary.BigEndian.AppendUint32(b, p.Timestamp)
	b = binary.BigEndian.AppendUint32(b, p.SSRC)
	b = binary.BigEndian.AppendUint64(b, uint64(p.SentAt))
	b = append(b, p.Tag[:]...)
	return append(b, make([]byte, size-rtpMinLen)...)
}

// AppendRTCP appends p encoded as a 28-byte RTCP receiver report.
func (p Packet) AppendRTCP(b []byte) []byte {
	b = append(b, 0x80, rtcpTypeRR)
	b = binary.BigEndian.AppendUint16(b, rtcpLen/4-1)
	b = binary.BigEndian.AppendUint32(b, p.SSRC)
	b = binary.BigEndian.AppendUint64(b, uint64(p.SentAt))
	b = append(b, p.Tag[:]...)
	return binary.BigEndian.AppendUint32(b, p.Seq)
}

// ParsePacket decodes a harness RTP or RTCP packet, telling them apart by
// the second byte as in RFC 5761 (192..223 is RTCP).
func ParsePacket(b []byte) (Packet, error) {
	if len(b) < 2 || b[0]>>6 != 2 {
		return Packet{}, errors.New("not RTP/RTCP version 2")
	}
	if b[1] >= 192 && b[1] <= 223 {
		if len(b) != rtcpLen || b[0] != 0x80 || b[1] != rtcpTypeRR || binary.BigEndian.Uint16(b[2:]) != rtcpLen/4-1 {
			return Packet{}, fmt.Errorf("not a harness RTCP packet (%d bytes, type %d)", len(b), b[1])
		}
		return Packet{
			RTCP:        true,
			PayloadType: b[1],
			SSRC:        binary.BigEndian.Uint32(b[4:]),
			SentAt:      int64(binary.BigEndian.Uint64(b[8:])),
			Tag:         Tag(b[16:24]),
			Seq:         binary.BigEndian.Uint32(b[24:]),
		}, nil
	}
	if len(b) < rtpMinLen || b[0]&0x3f != 0 {
		return Packet{}, fmt.Errorf("not a harness RTP packet (%d bytes)", len(b))
	}
	return Packet{
		PayloadType: b[1] & 0x7f,
		Seq:         uint32(binary.BigEndian.Uint16(b[2:])),
		Timestamp:   binary.BigEndian.Uint32(b[4:]),
		SSRC:        binary.BigEndian.Uint32(b[8:]),
		SentAt:      int64(binary.BigEndian.Uint64(b[12:])),
		Tag:         Tag(b[20:28]),
	}, nil
}

// Stats are the receive statistics of one socket (RTP or RTCP) of an
// Endpoint.
type Stats struct {
	Packets, Bytes int // harness packets of the socket's kind
	Invalid        int // datagrams that are not harness packets
	WrongKind      int // RTCP on the RTP socket or RTP on the RTCP socket
	// Sources holds per-sender statistics keyed by Tag.String(); a missing
	// key reads as zero, e.g. Sources["attacker"].Packets == 0.
	Sources map[string]SourceStats
}

// SourceStats are the receive statistics of one sender tag.
type SourceStats struct {
	Packets, Bytes int
	Duplicates     int // packets whose sequence number was already seen
	// Lost counts sequence numbers missing between 0 (senders start there)
	// and the highest one received; losses after it are invisible, compare
	// Packets with the number sent for that.
	Lost      int
	Latencies []time.Duration  // one-way (receive − send time), arrival order
	From      []netip.AddrPort // distinct source addresses, first-seen order
}

// Latency returns the q-quantile (0..1, nearest rank) of the latencies,
// or 0 if there are none. Median: Latency(0.5), p99: Latency(0.99).
func (s SourceStats) Latency(q float64) time.Duration { return Quantile(s.Latencies, q) }

// Quantile returns the q-quantile (0..1, nearest rank) of ds, 0 if empty.
func Quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// sourceAcc accumulates SourceStats plus the sequence numbers seen.
type sourceAcc struct {
	SourceStats
	seen    map[int64]bool
	lastExt int64 // extended (unwrapped) sequence number of the last packet
	maxExt  int64
}

// statsAcc accumulates Stats for one socket; guarded by Endpoint.mu.
type statsAcc struct {
	packets, bytes, invalid, wrongKind int
	sources                            map[string]*sourceAcc
}

func (a *statsAcc) add(p Packet, n int, from netip.AddrPort, now time.Time) {
	a.packets++
	a.bytes += n
	src := a.sources[p.Tag.String()]
	if src == nil {
		src = &sourceAcc{seen: map[int64]bool{}, lastExt: -1, maxExt: -1}
		a.sources[p.Tag.String()] = src
	}
	ext := int64(p.Seq)
	if !p.RTCP && src.lastExt >= 0 { // unwrap the 16-bit RTP sequence number
		ext = src.lastExt + int64(int16(uint16(p.Seq)-uint16(src.lastExt)))
	}
	src.lastExt = ext
	src.maxExt = max(src.maxExt, ext)
	if src.seen[ext] {
		src.Duplicates++
	}
	src.seen[ext] = true
	src.Packets++
	src.Bytes += n
	src.Latencies = append(src.Latencies, now.Sub(time.Unix(0, p.SentAt)))
	if !slices.Contains(src.From, from) {
		src.From = append(src.From, from)
	}
}

func (a *statsAcc) snapshot() Stats {
	s := Stats{Packets: a.packets, Bytes: a.bytes, Invalid: a.invalid, WrongKind: a.wrongKind, Sources: map[string]SourceStats{}}
	for tag, src := range a.sources {
		ss := src.SourceStats
		ss.Latencies = slices.Clone(ss.Latencies)
		ss.From = slices.Clone(ss.From)
		ss.Lost = int(src.maxExt+1) - len(src.seen)
		s.Sources[tag] = ss
	}
	return s
}

// Pace says how many packets to send and how fast.
type Pace struct {
	Count    int           // packets to send
	Interval time.Duration // between packets; 0 = back to back
	Size     int           // RTP packet size in bytes (default DefaultRTPSize, min 28)
}

// Endpoint is a media endpoint of a call: an RTP and an RTCP UDP socket
// that send tagged packets and record what they receive. Receiving runs
// until Close or until the context given to NewEndpoint is done.
type Endpoint struct {
	Tag  Tag
	SSRC uint32

	rtp, rtcp *net.UDPConn
	stop      func() bool
	wg        sync.WaitGroup

	mu            sync.Mutex
	changed       chan struct{} // closed and replaced on every received packet
	recv          [2]*statsAcc  // index 0: RTP socket, 1: RTCP socket
	rtpSeq, rtcpN uint32        // next sequence numbers
}

// NewEndpoint wraps rtp and rtcp (taking ownership) into an Endpoint
// sending with tag, and starts its receive loops.
func NewEndpoint(ctx context.Context, tag string, rtp, rtcp *net.UDPConn) *Endpoint {
	e := &Endpoint{
		Tag:     NewTag(tag),
		SSRC:    rand.Uint32(),
		rtp:     rtp,
		rtcp:    rtcp,
		changed: make(chan struct{}),
	}
	for i := range e.recv {
		e.recv[i] = &statsAcc{sources: map[string]*sourceAcc{}}
	}
	e.wg.Add(2)
	go e.receive(rtp, false)
	go e.receive(rtcp, true)
	e.stop = context.AfterFunc(ctx, func() { e.closeConns() })
	return e
}

// ListenEndpoint opens an Endpoint on ip (random ports) in namespace ns
// ("" = the test process's namespace).
func ListenEndpoint(ctx context.Context, ns string, ip netip.Addr, tag string) (*Endpoint, error) {
	rtp, err := ListenUDPIn(ns, netip.AddrPortFrom(ip, 0))
	if err != nil {
		return nil, err
	}
	rtcp, err := ListenUDPIn(ns, netip.AddrPortFrom(ip, 0))
	if err != nil {
		rtp.Close()
		return nil, err
	}
	return NewEndpoint(ctx, tag, rtp, rtcp), nil
}

// ListenEndpoint opens an Endpoint on the LAN address of host.
func (l *LAN) ListenEndpoint(ctx context.Context, host, tag string) (*Endpoint, error) {
	return ListenEndpoint(ctx, l.NS(host), l.Addr(host), tag)
}

// RTPAddr returns the local address of the RTP socket.
func (e *Endpoint) RTPAddr() netip.AddrPort { return e.rtp.LocalAddr().(*net.UDPAddr).AddrPort() }

// RTCPAddr returns the local address of the RTCP socket.
func (e *Endpoint) RTCPAddr() netip.AddrPort { return e.rtcp.LocalAddr().(*net.UDPAddr).AddrPort() }

// SendRTP sends pace.Count RTP packets from the RTP socket to dst, the
// first one immediately, then one per pace.Interval. Sequence numbers
// continue across calls and start at 0. It returns how many were sent; it
// stops early when ctx is done (returning ctx's error) or a write fails.
func (e *Endpoint) SendRTP(ctx context.Context, dst netip.AddrPort, pace Pace) (int, error) {
	size := pace.Size
	if size == 0 {
		size = DefaultRTPSize
	}
	buf := make([]byte, 0, max(size, rtpMinLen))
	return e.send(ctx, pace, func() error {
		e.mu.Lock()
		seq := e.rtpSeq
		e.rtpSeq++
		e.mu.Unlock()
		p := Packet{PayloadType: DefaultPayloadType, Seq: seq, Timestamp: seq * 160, SSRC: e.SSRC, SentAt: time.Now().UnixNano(), Tag: e.Tag}
		_, err := e.rtp.WriteToUDPAddrPort(p.AppendRTP(buf[:0], size), dst)
		return err
	})
}

// SendRTCP sends pace.Count RTCP receiver reports from the RTCP socket to
// dst, paced like SendRTP (pace.Size is ignored).
func (e *Endpoint) SendRTCP(ctx context.Context, dst netip.AddrPort, pace Pace) (int, error) {
	buf := make([]byte, 0, rtcpLen)
	return e.send(ctx, pace, func() error {
		e.mu.Lock()
		seq := e.rtcpN
		e.rtcpN++
		e.mu.Unlock()
		p := Packet{RTCP: true, PayloadType: rtcpTypeRR, Seq: seq, SSRC: e.SSRC, SentAt: time.Now().UnixNano(), Tag: e.Tag}
		_, err := e.rtcp.WriteToUDPAddrPort(p.AppendRTCP(buf[:0]), dst)
		return err
	})
}

func (e *Endpoint) send(ctx context.Context, pace Pace, one func() error) (int, error) {
	var tick <-chan time.Time
	if pace.Interval > 0 {
		t := time.NewTicker(pace.Interval)
		defer t.Stop()
		tick = t.C
	}
	for sent := 0; sent < pace.Count; sent++ {
		if sent > 0 && tick != nil {
			select {
			case <-ctx.Done():
				return sent, ctx.Err()
			case <-tick:
			}
		} else if err := ctx.Err(); err != nil {
			return sent, err
		}
		if err := one(); err != nil {
			return sent, fmt.Errorf("send packet %d: %w", sent, err)
		}
	}
	return pace.Count, nil
}

// receive records packets from conn until it is closed.
func (e *Endpoint) receive(conn *net.UDPConn, rtcp bool) {
	defer e.wg.Done()
	acc := e.recv[0]
	if rtcp {
		acc = e.recv[1]
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return // closed (Close or ctx done)
		}
		now := time.Now()
		p, perr := ParsePacket(buf[:n])
		e.mu.Lock()
		switch {
		case perr != nil:
			acc.invalid++
		case p.RTCP != rtcp:
			acc.wrongKind++
		default:
			acc.add(p, n, from, now)
		}
		close(e.changed)
		e.changed = make(chan struct{})
		e.mu.Unlock()
	}
}

// RTPStats returns a snapshot of what the RTP socket received.
func (e *Endpoint) RTPStats() Stats { return e.stats(0) }

// RTCPStats returns a snapshot of what the RTCP socket received.
func (e *Endpoint) RTCPStats() Stats { return e.stats(1) }

func (e *Endpoint) stats(i int) Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.recv[i].snapshot()
}

// MissingRTP returns the sequence numbers below n that the RTP socket
// never received from the sender tagged from, in order (duplicates are in
// SourceStats.Duplicates).
func (e *Endpoint) MissingRTP(from string, n int) []int64 { return e.missing(0, from, n) }

// MissingRTCP is MissingRTP for the RTCP socket.
func (e *Endpoint) MissingRTCP(from string, n int) []int64 { return e.missing(1, from, n) }

func (e *Endpoint) missing(i int, from string, n int) []int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	var seen map[int64]bool
	if src := e.recv[i].sources[from]; src != nil {
		seen = src.seen
	}
	var out []int64
	for s := range int64(n) {
		if !seen[s] {
			out = append(out, s)
		}
	}
	return out
}

// WaitRTP waits until the RTP socket received at least n packets from the
// sender tagged from ("" = any sender), or ctx is done.
func (e *Endpoint) WaitRTP(ctx context.Context, from string, n int) error {
	return e.wait(ctx, 0, from, n)
}

// WaitRTCP is WaitRTP for the RTCP socket.
func (e *Endpoint) WaitRTCP(ctx context.Context, from string, n int) error {
	return e.wait(ctx, 1, from, n)
}

func (e *Endpoint) wait(ctx context.Context, i int, from string, n int) error {
	return e.waitFor(ctx, i, from, n, "", func(src *sourceAcc) int { return src.Packets })
}

// WaitRTPThrough waits until the RTP socket has seen the sender's packets
// up to sequence number n-1: received, or missing below one received. The
// relay keeps a party's packets in order, so nothing sent before them
// arrives later.
func (e *Endpoint) WaitRTPThrough(ctx context.Context, from string, n int) error {
	return e.waitFor(ctx, 0, from, n, " up to sequence", func(src *sourceAcc) int { return int(src.maxExt + 1) })
}

// WaitRTCPThrough is WaitRTPThrough for the RTCP socket.
func (e *Endpoint) WaitRTCPThrough(ctx context.Context, from string, n int) error {
	return e.waitFor(ctx, 1, from, n, " up to sequence", func(src *sourceAcc) int { return int(src.maxExt + 1) })
}

// waitFor waits until count of the sender's statistics on socket i
// ("" = every sender's packets together) reaches n.
func (e *Endpoint) waitFor(ctx context.Context, i int, from string, n int, what string, count func(*sourceAcc) int) error {
	for {
		e.mu.Lock()
		got := e.recv[i].packets
		if from != "" {
			got = 0
			if src := e.recv[i].sources[from]; src != nil {
				got = count(src)
			}
		}
		changed := e.changed
		e.mu.Unlock()
		if got >= n {
			return nil
		}
		select {
		case <-ctx.Done():
			kind := [2]string{"RTP", "RTCP"}[i]
			return fmt.Errorf("endpoint %s (%s): got %d of %d %s packets%s from %q: %w", e.Tag, e.RTPAddr(), got, n, kind, what, from, ctx.Err())
		case <-changed:
		}
	}
}

// Close closes both sockets and waits for the receive loops to end.
// Statistics stay readable.
func (e *Endpoint) Close() error {
	e.stop()
	err := e.closeConns()
	e.wg.Wait()
	return err
}

func (e *Endpoint) closeConns() error {
	var errs []error
	for _, c := range []*net.UDPConn{e.rtp, e.rtcp} {
		if err := c.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RTCPOf is the RTCP address paired with an RTP address: the next port.
func RTCPOf(rtp netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(rtp.Addr(), rtp.Port()+1)
}

// Latch lets a caller and a callee latch on both legs of a relay channel
// the way ICE connectivity checks do, and goes on until the relay trusts
// both: the caller sends one RTP and one RTCP probe to its relay address
// local first (dropped: the callee has not latched yet), then both send a
// probe on each socket every 20 ms until each party has heard
// LatchProbesHeard from the other on both sockets. The relay forwards at
// most two datagrams toward a party that has not yet shown it carries the
// call, so the third proves that both are trusted and media will flow
// without loss; a last probe each way, seen through by its receiver,
// leaves none in flight. It returns how many probes the caller and the callee sent
// on each socket; the relay may have dropped any of them.
func Latch(ctx context.Context, caller, callee *Endpoint, local, remote netip.AddrPort) (callerProbes, calleeProbes int, err error) {
	one := Pace{Count: 1}
	probe := func(e *Endpoint, to netip.AddrPort) error {
		if _, err := e.SendRTP(ctx, to, one); err != nil {
			return err
		}
		_, err := e.SendRTCP(ctx, RTCPOf(to), one)
		return err
	}
	if err := probe(caller, local); err != nil {
		return 0, 0, err
	}
	callerProbes = 1
	for calleeProbes < 250 {
		if err := probe(callee, remote); err != nil {
			return callerProbes, calleeProbes, err
		}
		calleeProbes++
		if err := probe(caller, local); err != nil {
			return callerProbes, calleeProbes, err
		}
		callerProbes++
		wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		err := errors.Join(caller.WaitRTP(wctx, callee.Tag.String(), LatchProbesHeard), caller.WaitRTCP(wctx, callee.Tag.String(), LatchProbesHeard),
			callee.WaitRTP(wctx, caller.Tag.String(), LatchProbesHeard), callee.WaitRTCP(wctx, caller.Tag.String(), LatchProbesHeard))
		cancel()
		if err == nil {
			// Trusted both ways: one more probe each, and once each has
			// seen through it, no earlier probe is still on its way.
			return callerProbes + 1, calleeProbes + 1, errors.Join(probe(caller, local), probe(callee, remote),
				caller.WaitRTPThrough(ctx, callee.Tag.String(), calleeProbes+1), caller.WaitRTCPThrough(ctx, callee.Tag.String(), calleeProbes+1),
				callee.WaitRTPThrough(ctx, caller.Tag.String(), callerProbes+1), callee.WaitRTCPThrough(ctx, caller.Tag.String(), callerProbes+1))
		}
		if ctx.Err() != nil {
			return callerProbes, calleeProbes, ctx.Err()
		}
	}
	return callerProbes, calleeProbes, errors.New("the parties' probes never made the relay trust both of them")
}

// LatchProbesHeard is how many probes each party hears from the other in
// Latch: one more than the relay's probe budget.
const LatchProbesHeard = 3
