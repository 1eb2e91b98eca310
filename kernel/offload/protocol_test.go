package offload

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

func TestDecodeRequest(t *testing.T) {
	l := leg("127.0.0.1", 40000, 40002)
	good := []Request{
		{V: Version, Op: OpOpen, Mode: ModeEBPF, Listen: netip.MustParseAddr("0.0.0.0"), MaxFlows: 16},
		{V: Version, Op: OpApply, Add: []nft.Leg{l}},
		{V: Version, Op: OpApply, Remove: []nft.Leg{l}},
		{V: Version, Op: OpCounters},
		{V: Version, Op: OpClose},
	}
	for _, r := range good {
		b, _ := json.Marshal(r)
		if _, err := DecodeRequest(b); err != nil {
			t.Errorf("%s: %v", b, err)
		}
	}
	bad := []string{
		`{"v":2,"op":"counters"}`,
		`{"v":1,"op":"dump"}`,
		`{"v":1,"op":"counters","mode":"ebpf"}`,
		`{"v":1,"op":"open","mode":"xdp","listen":"0.0.0.0","max_flows":4}`,
		`{"v":1,"op":"open","mode":"ebpf","listen":"::","max_flows":4}`,
		`{"v":1,"op":"open","mode":"ebpf","listen":"0.0.0.0","max_flows":0}`,
		`{"v":1,"op":"open","mode":"ebpf","max_flows":4}`,
		`{"v":1,"op":"apply","max_flows":4}`,
		`{"v":1,"op":"counters","extra":1}`,
		`{"v":1,"op":"counters"} {}`,
		`{"v":1,"op":"apply","add":[{"A":{"Peer":"[::1]:5","Port":1},"B":{"Peer":"1.2.3.4:5","Port":2},"LocalA":"1.1.1.1","LocalB":"1.1.1.1"}]}`,
	}
	for _, s := range bad {
		if _, err := DecodeRequest([]byte(s)); !errors.Is(err, ErrRefused) {
			t.Errorf("%s: %v, want ErrRefused", s, err)
		}
	}
}

func TestFrameBounds(t *testing.T) {
	for _, hdr := range [][]byte{{0, 0, 0, 0}, {0, 0x10, 0, 1}} {
		if _, err := readFrame(bytes.NewReader(append(hdr, '{', '}'))); !errors.Is(err, ErrRefused) {
			t.Errorf("length %v: %v, want ErrRefused", hdr, err)
		}
	}
	var buf bytes.Buffer
	if err := writeFrame(&buf, Request{V: Version, Op: OpClose}); err != nil {
		t.Fatal(err)
	}
	b, err := readFrame(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := DecodeRequest(b); err != nil || r.Op != OpClose {
		t.Fatalf("round trip: %+v %v", r, err)
	}
}

// FuzzDecodeRequest: the broker's decoder never panics, and what it
// accepts survives encoding and decoding again unchanged.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"v":1,"op":"open","mode":"auto","listen":"0.0.0.0","max_flows":40000}`))
	f.Add([]byte(`{"v":1,"op":"apply","remove":[],"add":[{"A":{"Peer":"192.0.2.10:5000","Port":40000},"B":{"Peer":"198.51.100.10:6000","Port":40002},"LocalA":"127.0.0.1","LocalB":"127.0.0.1"}]}`))
	f.Add([]byte(`{"v":1,"op":"counters"}`))
	f.Add([]byte(`{"v":1,"op":"close"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrRefused) {
				t.Fatalf("error not ErrRefused: %v", err)
			}
			return
		}
		again, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := DecodeRequest(again)
		if err != nil {
			t.Fatalf("re-encoded %s refused: %v", again, err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed %+v to %+v", r, r2)
		}
	})
}
