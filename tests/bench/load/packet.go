// Package load holds what the benchmark's traffic generator (cmd/rtpload)
// and its runner (the TestBench test) share: the layout of the test
// packets, the latency histogram and the JSON result.
package load

import "encoding/binary"

// Test packet layout (UDP payload). The first 12 bytes are a valid RTP v2
// header, so relays that look at RTP (rtpengine) accept the packets; the
// fields after it are ours.
//
//	0      V=2, P=0, X=0, CC=0 (0x80)
//	1      M=0, payload type
//	2..3   RTP sequence number (low 16 bits of Seq)
//	4..7   RTP timestamp (Seq × 160: 20 ms of 8 kHz audio per packet)
//	8..11  SSRC (unique per flow and side)
//	12..15 Magic
//	16..23 send time, CLOCK_REALTIME nanoseconds
//	24..27 flow index
//	28..31 Seq (32 bits, so a long run never wraps)
//	32     side of the sender (0 = a, 1 = b)
//	33     flags (FlagPrime)
//	34..   filler (FillByte), up to the chosen size
const (
	Magic      = 0x4a4e4231 // "JNB1"
	HeaderSize = 34
	FillByte   = 0xd5 // PCMU silence
	FlagPrime  = 1    // a latching packet sent before the measurement; not counted
)

// Packet is a decoded test packet.
type Packet struct {
	PT     byte
	SSRC   uint32
	SendNs int64
	Flow   uint32
	Seq    uint32
	Side   byte
	Flags  byte
}

// SSRC is the RTP SSRC of a flow: distinct per flow and per side.
func SSRC(side byte, flow uint32) uint32 {
	return 0x4a4e0000 ^ uint32(side)<<31 ^ flow*2654435761
}

// Encode writes the header fields of p into b (len(b) ≥ HeaderSize). The
// filler after HeaderSize is left untouched: callers fill it once.
func Encode(b []byte, p *Packet) {
	_ = b[HeaderSize-1]
	b[0] = 0x80
	b[1] = p.PT & 0x7f
	binary.BigEndian.PutUint16(b[2:], uint16(p.Seq))
	binary.BigEndian.PutUint32(b[4:], p.Seq*160)
	binary.BigEndian.PutUint32(b[8:], p.SSRC)
	binary.BigEndian.PutUint32(b[12:], Magic)
	binary.BigEndian.PutUint64(b[16:], uint64(p.SendNs))
	binary.BigEndian.PutUint32(b[24:], p.Flow)
	binary.BigEndian.PutUint32(b[28:], p.Seq)
	b[32] = p.Side
	b[33] = p.Flags
}

// Decode parses b into p. It reports false when b is not a well-formed
// test packet: too short, not RTP v2, wrong magic, or RTP fields that
// disagree with ours (a relay that rewrote them).
func Decode(b []byte, p *Packet) bool {
	if len(b) < HeaderSize || b[0] != 0x80 || binary.BigEndian.Uint32(b[12:]) != Magic {
		return false
	}
	p.PT = b[1] & 0x7f
	p.SSRC = binary.BigEndian.Uint32(b[8:])
	p.SendNs = int64(binary.BigEndian.Uint64(b[16:]))
	p.Flow = binary.BigEndian.Uint32(b[24:])
	p.Seq = binary.BigEndian.Uint32(b[28:])
	p.Side = b[32]
	p.Flags = b[33]
	return binary.BigEndian.Uint16(b[2:]) == uint16(p.Seq) &&
		binary.BigEndian.Uint32(b[4:]) == p.Seq*160 &&
		p.SSRC == SSRC(p.Side, p.Flow)
}
