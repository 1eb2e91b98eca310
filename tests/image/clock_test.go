package image

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// checkClockSteps steps the guest's wall clock a day forward and two days
// back during a call, as NTP does on a router that booted without a
// battery-backed clock. The call must keep flowing across both steps, and
// the channel must still expire imageExpire seconds after its last
// datagram, measured by the monotonic clock: neither at once (the clock
// jumped a day ahead) nor never (it went back two days).
func checkClockSteps(ctx context.Context, t *testing.T, v *vm, srv *harness.XMPPServer, base uint16) {
	// The pool holds one channel: wait until the previous subtest's has
	// expired.
	wctx, cancel := context.WithTimeout(ctx, 3*imageExpire*time.Second)
	defer cancel()
	if _, err := v.console.waitLog(wctx, "channel ended"); err != nil {
		t.Fatal(err)
	}
	outs, err := srv.Requester(user, password).Run(ctx, harness.RequestArgs{})
	if err != nil || len(outs) != 1 || outs[0].Type != "result" {
		t.Fatalf("channel request: %+v %v", outs, err)
	}
	id := outs[0].Channel["id"]
	local, remote, err := outs[0].RelayAddrs()
	if err != nil {
		t.Fatal(err)
	}
	caller, callee := loopbackParties(ctx, t)
	if _, _, err := harness.Latch(ctx, caller, callee, local, remote); err != nil {
		t.Fatal(err)
	}

	var lastSent time.Time
	for _, step := range []int{86400, -172800} {
		stepClock(ctx, t, v, step)
		// A second of media each way; every packet must arrive.
		got := [2]int{callee.RTPStats().Sources["caller"].Packets, caller.RTPStats().Sources["callee"].Packets}
		pace := harness.Pace{Count: 50, Interval: 20 * time.Millisecond}
		errs := make(chan error, 2)
		go func() { _, err := caller.SendRTP(ctx, local, pace); errs <- err }()
		go func() { _, err := callee.SendRTP(ctx, remote, pace); errs <- err }()
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		lastSent = time.Now()
		mctx, mcancel := context.WithTimeout(ctx, 10*time.Second)
		err1 := callee.WaitRTP(mctx, "caller", got[0]+pace.Count)
		err2 := caller.WaitRTP(mctx, "callee", got[1]+pace.Count)
		mcancel()
		if err1 != nil || err2 != nil {
			t.Fatalf("media after a clock step of %d s: %v %v", step, err1, err2)
		}
		t.Logf("clock stepped by %d s: %d packets each way relayed", step, pace.Count)
	}

	// Expiry follows the monotonic clock.
	ectx, ecancel := context.WithTimeout(ctx, 4*imageExpire*time.Second)
	defer ecancel()
	line, err := v.console.wait(ectx, "channel "+id+" ended", func(l string) bool {
		rec, ok := record(l)
		return ok && rec.Msg() == "channel ended" && rec.Str("channel") == id
	})
	if err != nil {
		t.Fatal(err)
	}
	idle := time.Since(lastSent)
	rec, _ := record(line)
	t.Logf("channel ended %s after the last datagram (expire %d s): %s", idle.Round(10*time.Millisecond), imageExpire, line[strings.IndexByte(line, '{'):])
	if rec.Str("reason") != "expired" {
		t.Errorf("channel ended for %q, want expired", rec.Str("reason"))
	}
	// The console is read as it comes, so the end is seen shortly after
	// it happens; the lower bound allows for the guest's clock granularity.
	if idle < (imageExpire-1)*time.Second || idle > (imageExpire+5)*time.Second {
		t.Errorf("channel expired %s after its last datagram, want about %d s", idle, imageExpire)
	}
	if secs := rec.Int("seconds"); secs < 0 || secs > 120 {
		t.Errorf("channel lived %d s by relayd's account: the wall-clock steps leaked into its duration", secs)
	}
}

// stepClock asks the guest's init to step the wall clock by seconds and
// waits until it has.
func stepClock(ctx context.Context, t *testing.T, v *vm, seconds int) {
	t.Helper()
	if _, err := fmt.Fprintf(v.stdin, "jnrelay-clock-step %d\n", seconds); err != nil {
		t.Fatalf("write to the guest console: %v", err)
	}
	want := fmt.Sprintf("clock stepped by %s", time.Duration(seconds)*time.Second)
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if _, err := v.console.wait(sctx, want, func(l string) bool {
		return strings.HasPrefix(l, "init: ") && strings.Contains(l, want)
	}); err != nil {
		t.Fatal(err)
	}
}
