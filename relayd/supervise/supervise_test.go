package supervise

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// listen is a stand-in for systemd's notify socket: a real unixgram
// socket named by NOTIFY_SOCKET, as systemd sets it.
func listen(t *testing.T) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return c
}

func next(t *testing.T, c *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no notification: %v", err)
	}
	return string(buf[:n])
}

func TestNotifications(t *testing.T) {
	c := listen(t)
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := New(slog.New(slog.DiscardHandler))
	if n.CheckInterval() != time.Second {
		t.Fatalf("check interval %s, want 1s (half of WATCHDOG_USEC)", n.CheckInterval())
	}

	n.Ready("0/250 channels")
	if got := next(t, c); got != "READY=1\nSTATUS=0/250 channels" {
		t.Fatalf("ready: %q", got)
	}
	n.Status("0/250 channels") // unchanged: not sent
	n.Status("1/250 channels")
	if got := next(t, c); got != "STATUS=1/250 channels" {
		t.Fatalf("status: %q", got)
	}

	// A failing check sends nothing; the next passing one pings.
	sick := errors.New("worker 0 did not answer")
	if err := n.Check(context.Background(), func(context.Context) error { return sick }); !errors.Is(err, sick) {
		t.Fatalf("check returned %v", err)
	}
	var deadline time.Duration
	if err := n.Check(context.Background(), func(ctx context.Context) error {
		d, _ := ctx.Deadline()
		deadline = time.Until(d)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if got := next(t, c); got != "WATCHDOG=1" {
		t.Fatalf("after a failed then a passing check: %q, want only WATCHDOG=1", got)
	}
	if deadline <= 0 || deadline > 500*time.Millisecond {
		t.Fatalf("health deadline %s, want a quarter of the 2s watchdog", deadline)
	}

	n.Reloading()
	n.Reloaded()
	n.Stopping("draining: 1/250 channels")
	for _, want := range []string{"RELOADING=1", "READY=1", "STOPPING=1\nSTATUS=draining: 1/250 channels"} {
		if got := next(t, c); got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	}
}

func TestNoWatchdogForAnotherProcess(t *testing.T) {
	listen(t)
	t.Setenv("WATCHDOG_USEC", "2000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()+1))
	if n := New(slog.New(slog.DiscardHandler)); n.CheckInterval() != 0 {
		t.Fatalf("watchdog meant for pid %d taken by %d", os.Getpid()+1, os.Getpid())
	}
}

func TestOutsideSystemdNothingHappens(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	n := New(slog.New(slog.DiscardHandler))
	n.Ready("x")
	if n.CheckInterval() != 0 {
		t.Fatal("watchdog without systemd")
	}
	if err := n.Check(context.Background(), func(context.Context) error { return nil }); err != nil {
		t.Fatal(err)
	}
}
