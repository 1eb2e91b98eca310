package reachability

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// fastTiming keeps the tests quick; the probe logic is the same.
var fastTiming = Timing{Tries: 2, FirstWait: 100 * time.Millisecond}

// fakeServer is a STUN server with two sockets, on 127.0.0.1 and
// 127.0.0.2, whose behaviour toward change requests the test chooses.
type fakeServer struct {
	primary, other *net.UDPConn
	// advertise names the other socket in OTHER-ADDRESS.
	advertise bool
	// onChange: "answer" from the other socket, "drop" (as a NAT would),
	// "same" (answer from the primary one), "refuse" (420).
	onChange string
	// plainAnswers, when > 0, is how many plain requests are answered.
	plainAnswers int
}

func startFake(t *testing.T, advertise bool, onChange string) *fakeServer {
	t.Helper()
	return startFakeAnswering(t, advertise, onChange, 0)
}

// startFakeAnswering is startFake answering only the first plain plain
// requests (0: all).
func startFakeAnswering(t *testing.T, advertise bool, onChange string, plain int) *fakeServer {
	t.Helper()
	f := &fakeServer{advertise: advertise, onChange: onChange, plainAnswers: plain}
	var err error
	if f.primary, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	if f.other, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)}); err != nil {
		f.primary.Close()
		t.Skipf("no 127.0.0.2: %v", err)
	}
	t.Cleanup(func() { f.primary.Close(); f.other.Close() })
	go f.serve()
	return f
}

func (f *fakeServer) addr() netip.AddrPort {
	return f.primary.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (f *fakeServer) serve() {
	buf := make([]byte, 1500)
	plain := 0
	for {
		n, src, err := f.primary.ReadFromUDPAddrPort(buf)
		if err != nil {
			return
		}
		req := stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if req.Decode() != nil {
			continue
		}
		change := false
		if v, err := req.Get(stun.AttrChangeRequest); err == nil && len(v) == 4 {
			change = binary.BigEndian.Uint32(v)&(changeIP|changePort) != 0
		}
		if !change {
			if plain++; f.plainAnswers > 0 && plain > f.plainAnswers {
				continue
			}
		}
		from := f.primary
		setters := []stun.Setter{&req, stun.BindingSuccess,
			&stun.XORMappedAddress{IP: src.Addr().AsSlice(), Port: int(src.Port())}}
		switch {
		case change && f.onChange == "drop":
			continue
		case change && f.onChange == "answer":
			from = f.other
		case change && f.onChange == "refuse":
			setters = []stun.Setter{&req, stun.NewType(stun.MethodBinding, stun.ClassErrorResponse), stun.CodeUnknownAttribute}
		}
		if f.advertise {
			o := f.other.LocalAddr().(*net.UDPAddr)
			setters = append(setters, &otherAddress{stun.MappedAddress{IP: o.IP, Port: o.Port}})
		}
		res, err := stun.Build(setters...)
		if err != nil {
			continue
		}
		from.WriteToUDPAddrPort(res.Raw, src)
	}
}

type otherAddress struct{ stun.MappedAddress }

func (o *otherAddress) AddTo(m *stun.Message) error { return o.AddToAs(m, stun.AttrOtherAddress) }

// probeFrom probes from a fresh loopback socket.
func probeFrom(t *testing.T, server netip.AddrPort) PortResult {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return probePort(ctx, UDPSocket(conn, conn.Close), server, fastTiming)
}

func TestProbeVerdicts(t *testing.T) {
	for _, tc := range []struct {
		name      string
		advertise bool
		onChange  string
		plain     int // plain requests answered (0: all)
		want      Verdict
		cause     cause
		why       string
	}{
		{"answer from the second address", true, "answer", 0, Reachable, causeNone, "never sent to, arrived"},
		{"second address silent", true, "drop", 0, NotReachable, causeNone, "drops datagrams nobody asked for"},
		{"no second address", false, "drop", 0, CannotTell, causeNoSecondAddress, "has no second address"},
		{"change ignored", true, "same", 0, CannotTell, causeNoSecondAddress, "does not honour CHANGE-REQUEST"},
		{"change refused", true, "refuse", 0, CannotTell, causeNoSecondAddress, "refused the change request"},
		{"server goes silent", true, "drop", 1, CannotTell, causeNoAnswer, "stopped answering"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := startFakeAnswering(t, tc.advertise, tc.onChange, tc.plain)
			r := probeFrom(t, f.addr())
			if r.Verdict != tc.want || r.cause != tc.cause || !strings.Contains(r.Why, tc.why) {
				t.Fatalf("got %s (cause %d): %s; want %s (cause %d) saying %q", r.Verdict, r.cause, r.Why, tc.want, tc.cause, tc.why)
			}
			if r.Mapped == "" {
				t.Fatalf("no mapped address in %+v", r)
			}
		})
	}
}

func TestProbeSilentServer(t *testing.T) {
	mute, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	r := probeFrom(t, mute.LocalAddr().(*net.UDPAddr).AddrPort())
	if r.Verdict != CannotTell || r.cause != causeNoAnswer {
		t.Fatalf("silent server: %+v", r)
	}
}

func TestCombine(t *testing.T) {
	for _, tc := range []struct {
		in   []Verdict
		want Verdict
	}{
		{nil, CannotTell},
		{[]Verdict{Reachable, Reachable}, Reachable},
		{[]Verdict{Reachable, NotReachable}, NotReachable},
		{[]Verdict{CannotTell, NotReachable}, NotReachable},
		{[]Verdict{Reachable, CannotTell}, CannotTell},
	} {
		if got := combine(tc.in); got != tc.want {
			t.Errorf("combine(%v) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

// mappedSocket reports sources as a dual-stack socket does: IPv4-mapped.
type mappedSocket struct{ Socket }

func (s mappedSocket) Receive(ctx context.Context, b []byte) (int, netip.AddrPort, error) {
	n, from, err := s.Socket.Receive(ctx, b)
	return n, netip.AddrPortFrom(netip.AddrFrom16(from.Addr().As16()), from.Port()), err
}

// From a dual-stack socket (the STUN port's), an answer from the server's
// own address is still recognised as such.
func TestProbeDualStackSource(t *testing.T) {
	f := startFake(t, true, "same")
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := probePort(ctx, mappedSocket{UDPSocket(conn, conn.Close)}, f.addr(), fastTiming)
	if r.Verdict != CannotTell || !strings.Contains(r.Why, "does not honour CHANGE-REQUEST") {
		t.Fatalf("%+v", r)
	}
}
