package reachability

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"
)

// loopbackTarget opens a fresh loopback socket as a port to probe.
func loopbackTarget(kind Kind) Target {
	return Target{Kind: kind, Open: func(network string) (Socket, error) {
		conn, err := net.ListenUDP(network, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return nil, err
		}
		return UDPSocket(conn, conn.Close), nil
	}}
}

// runChecker runs a Checker until its first report.
func runChecker(t *testing.T, cfg Config) Report {
	t.Helper()
	cfg.Timing = fastTiming
	cfg.Forward = "UDP ports 40000-40999 and 3478"
	reports := make(chan Report, 1)
	cfg.OnReport = func(r Report) {
		select {
		case reports <- r:
		default:
		}
	}
	c := New(cfg)
	if r := c.Report(); r.Verdict != Pending {
		t.Fatalf("before the first check: %+v", r)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case r := <-reports:
		if got := c.Report(); got.Verdict != r.Verdict || got.Summary != r.Summary {
			t.Fatalf("Report() %+v, reported %+v", got, r)
		}
		return r
	case <-time.After(30 * time.Second):
	}
	t.Fatal("no report")
	return Report{}
}

func TestCheckerReports(t *testing.T) {
	targets := func() []Target {
		return []Target{loopbackTarget(KindRelay), loopbackTarget(KindRelay), loopbackTarget(KindSTUN)}
	}
	t.Run("reachable", func(t *testing.T) {
		f := startFake(t, true, "answer")
		r := runChecker(t, Config{Servers: []string{f.addr().String()}, Targets: targets})
		if r.Verdict != Reachable || r.RelayPorts != Reachable || r.STUN != Reachable || len(r.Ports) != 3 || r.Advice != "" ||
			!strings.HasPrefix(r.Summary, "Reachable: the Internet can reach ports ") || r.CheckedAt == nil || r.NextCheck.Sub(*r.CheckedAt) != DefaultInterval {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("not reachable", func(t *testing.T) {
		f := startFake(t, true, "drop")
		r := runChecker(t, Config{Servers: []string{f.addr().String()}, Targets: targets})
		if r.Verdict != NotReachable || r.RelayPorts != NotReachable || r.STUN != NotReachable ||
			r.NextCheck.Sub(*r.CheckedAt) != NotReachableInterval ||
			!strings.Contains(r.Advice, "Forward UDP ports 40000-40999 and 3478 on the router to this device (127.0.0.1)") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("first server cannot tell, the next can", func(t *testing.T) {
		plain := startFake(t, false, "drop")
		f := startFake(t, true, "answer")
		r := runChecker(t, Config{Servers: []string{plain.addr().String(), f.addr().String()}, Targets: targets})
		if r.Verdict != Reachable || r.Server != f.addr().String() {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("no server can tell: the first one's reasons", func(t *testing.T) {
		plain := startFake(t, false, "drop")
		mute, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer mute.Close()
		r := runChecker(t, Config{Servers: []string{plain.addr().String(), mute.LocalAddr().String()}, Targets: targets})
		if r.Verdict != CannotTell || r.Server != plain.addr().String() || !strings.Contains(r.Summary, "has no second address") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("cannot tell", func(t *testing.T) {
		f := startFake(t, false, "drop")
		r := runChecker(t, Config{Servers: []string{f.addr().String()}, Targets: targets})
		if r.Verdict != CannotTell || !strings.Contains(r.Summary, "has no second address") || !strings.Contains(r.Advice, "reachability.stun_servers") {
			t.Fatalf("%+v", r)
		}
	})
	t.Run("no server", func(t *testing.T) {
		r := runChecker(t, Config{Targets: targets})
		if r.Verdict != CannotTell || !strings.Contains(r.Summary, "no STUN server") {
			t.Fatalf("%+v", r)
		}
	})
}

// Recheck (the public address changed) runs the check again, no sooner
// than MinGap after the last one; requests in a burst make one check.
func TestRecheck(t *testing.T) {
	f := startFake(t, true, "answer")
	reports := make(chan Report, 8)
	gap := 300 * time.Millisecond
	var starts []time.Time // when each check began (Run's goroutine; read after its report)
	c := New(Config{Servers: []string{f.addr().String()}, Timing: fastTiming, MinGap: gap, Interval: time.Hour,
		Targets: func() []Target {
			starts = append(starts, time.Now())
			return []Target{loopbackTarget(KindRelay)}
		},
		OnReport: func(r Report) { reports <- r }})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	await := func() Report {
		select {
		case r := <-reports:
			return r
		case <-time.After(30 * time.Second):
			t.Fatal("no report")
		}
		return Report{}
	}
	await()
	for range 5 {
		c.Recheck()
	}
	await()
	if d := starts[1].Sub(starts[0]); d < gap {
		t.Fatalf("rechecked %s after the last check began, want at least %s", d, gap)
	}
	select {
	case r := <-reports:
		t.Fatalf("a burst of Rechecks made more than one check: %+v", r)
	case <-time.After(2 * gap):
	}
}
