package load

import (
	"testing"
)

func TestPacketRoundTrip(t *testing.T) {
	b := make([]byte, 172)
	in := Packet{PT: 0, SendNs: 1234567890123, Flow: 4242, Seq: 70000, Side: 1, Flags: FlagPrime}
	in.SSRC = SSRC(in.Side, in.Flow)
	Encode(b, &in)
	var out Packet
	if !Decode(b, &out) || out != in {
		t.Fatalf("Decode(Encode(%+v)) = %+v", in, out)
	}
	// The RTP fields must agree with ours: a relay that rewrote the RTP
	// sequence number or SSRC is caught.
	for _, off := range []int{0, 3, 5, 9, 13} {
		c := append([]byte(nil), b...)
		c[off] ^= 0x40
		if Decode(c, &out) {
			t.Errorf("byte %d flipped: still decoded", off)
		}
	}
	if Decode(b[:HeaderSize-1], &out) {
		t.Error("short packet decoded")
	}
	if n := testing.AllocsPerRun(100, func() { Encode(b, &in); Decode(b, &out) }); n != 0 {
		t.Errorf("Encode+Decode allocate %v times", n)
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	// 1..100000 ns: quantiles within the 1/32 bucket resolution.
	for v := int64(1); v <= 100000; v++ {
		h.Add(v)
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		want := q * 100000
		got := float64(h.Quantile(q))
		if got < want*(1-1.0/32) || got > want*(1+1.0/32) {
			t.Errorf("Quantile(%v) = %v, want %v ± 3.2%%", q, got, want)
		}
	}
	if m := h.Max(); m > 100000 || m < 100000*31/32 {
		t.Errorf("Max = %d", m)
	}
	// Sparse round trip and merge are exact.
	var g Histogram
	g.AddSparse(h.Sparse())
	g.Merge(&h)
	for i := range h.Counts {
		if g.Counts[i] != 2*h.Counts[i] {
			t.Fatalf("bucket %d: %d, want %d", i, g.Counts[i], 2*h.Counts[i])
		}
	}
	// Every bucket's lower bound maps back to that bucket.
	for i := range histBuckets - 1 {
		if b := bucketOf(bucketLow(i)); b != i {
			t.Fatalf("bucketOf(bucketLow(%d)) = %d", i, b)
		}
	}
	if n := testing.AllocsPerRun(100, func() { h.Add(12345) }); n != 0 {
		t.Errorf("Add allocates %v times", n)
	}
}
