package kernel

import (
	"context"
	"log/slog"
	"os"
	"testing"
)

func TestDetect(t *testing.T) {
	f := Detect()
	t.Logf("%+v", f)
	if f.Kernel == "" {
		t.Error("no kernel release")
	}
	// These are old enough to be present wherever relayd runs; GSO and GRO
	// depend on the kernel and are only logged.
	if !f.SourceFilter || !f.PktInfo {
		t.Errorf("Detect() = %+v; want SourceFilter and PktInfo", f)
	}
	if !f.RxqOvfl {
		fd, _ := sockT(t, "127.0.0.1:0")
		err := EnableRxqOvfl(fd)
		if err == nil {
			t.Error("Detect says no RxqOvfl, but EnableRxqOvfl works")
		}
		t.Logf("RxqOvfl absent: %v", err)
	}
	if f.BufForce != hasCapNetAdmin(t) {
		t.Errorf("BufForce = %v with CAP_NET_ADMIN = %v", f.BufForce, hasCapNetAdmin(t))
	}
	if attrs := f.LogAttrs(); len(attrs) != 7 {
		t.Errorf("LogAttrs() has %d attributes, want 7", len(attrs))
	}
}

func ExampleDetect() {
	logger := slog.New(slog.NewTextHandler(os.Stderr, nil))
	f := Detect()
	logger.LogAttrs(context.Background(), slog.LevelInfo, "kernel features", f.LogAttrs()...)
	if !f.SourceFilter {
		logger.Warn("kernel source filter unavailable; foreign sources are dropped in userspace")
	}
}
