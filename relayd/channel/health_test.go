package channel

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestDrainKeepsCallsAndRefusesNewOnes(t *testing.T) {
	m, ends := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27500, 27507 })
	info, a, b, _, _ := call(t, m)
	m.Drain()
	if !m.Draining() {
		t.Fatal("Draining() = false after Drain")
	}
	if _, err := m.Allocate(); !errors.Is(err, ErrDraining) {
		t.Fatalf("Allocate while draining: %v, want ErrDraining", err)
	}
	// The live call is untouched.
	for i := range 10 {
		msg := fmt.Appendf(nil, "drain-%d", i)
		a.send(info.LocalPort, msg)
		b.expect(msg, info.LocalPort+2)
		b.send(info.LocalPort+2, msg)
		a.expect(msg, info.LocalPort)
	}
	if n := len(m.Channels()); n != 1 {
		t.Fatalf("%d live channels while draining, want 1", n)
	}
	if !m.Kill(info.ID) {
		t.Fatal("channel gone")
	}
	if e := <-ends; e.Info.ID != info.ID || e.Reason != EndKilled {
		t.Fatalf("end %+v", e)
	}
}

func TestCheckPassesWhileServingAndFailsWhenWedged(t *testing.T) {
	m, _ := newTestManager(t, func(c *Config) { c.PortMin, c.PortMax = 27600, 27607; c.Workers = 2 })
	info, a, b, _, _ := call(t, m)
	for range 3 { // repeated probes each get their own answer
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := m.Check(ctx)
		cancel()
		if err != nil {
			t.Fatalf("healthy data plane failed the check: %v", err)
		}
	}
	a.send(info.LocalPort, []byte("before"))
	b.expect([]byte("before"), info.LocalPort+2)

	m.Wedge()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := m.Check(ctx)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wedged data plane passed the check: %v", err)
	}
	t.Logf("check on a wedged data plane: %v", err)
	// Close releases the wedged workers (the test's cleanup would hang
	// otherwise); a check after that reports the stop.
	m.Close()
	if err := m.Check(context.Background()); err == nil {
		t.Fatal("check passed after Close")
	}
}
