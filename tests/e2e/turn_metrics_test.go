package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/internal/testport"
	"github.com/jnrelay/jnrelay/relayd/turn"
)

// TestBuiltinTURNMetrics relays one coturn client's datagrams through the
// built-in TURN server on loopback and reads what Prometheus and the
// status document see: the relayd_turn_* series from zero (every known
// refusal reason at zero before anything happened), then the client's
// allocations and their payload to and from the peer, byte for byte; the
// status document's channels carry the TURN allocations beside them.
func TestBuiltinTURNMetrics(t *testing.T) {
	if _, err := exec.LookPath("turnutils_uclient"); err != nil {
		t.Fatalf("turnutils_uclient not installed (run tests/deps.sh): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	cfg := builtinTURNConfig(t)
	cfg.Metrics.Listen = net.JoinHostPort("127.0.0.1", strconv.Itoa(testport.TCP(t)))
	dir := t.TempDir()
	rd := startRelaydIn(t, "", dir, cfg)
	if _, err := rd.WaitLog(ctx, "TURN server started", 1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := rd.WaitLog(ctx, "metrics served", 1, nil); err != nil {
		t.Fatal(err)
	}
	scrape := func() string {
		t.Helper()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+cfg.Metrics.Listen+"/metrics", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("scrape: %v", err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape: %d %v", resp.StatusCode, err)
		}
		return string(body)
	}
	expect := func(scrape string, lines ...string) {
		t.Helper()
		for _, want := range lines {
			if !strings.Contains(scrape, "\n"+want+"\n") {
				t.Errorf("metrics lack %q", want)
			}
		}
	}
	before := []string{"relayd_turn_allocations 0", "relayd_turn_allocations_total 0",
		`relayd_calls_served_total{kind="turn"} 0`, `relayd_calls_served_total{kind="channel"} 0`}
	for _, r := range turn.RefusalReasons {
		before = append(before, `relayd_turn_refusals_total{reason="`+r+`"} 0`)
	}
	expect(scrape(), before...)

	peer := newEchoPeer(t)
	out, err := turnutilsUclient(ctx, t, cfg.TURN.Builtin.Port, turnSecret(t, dir), "metrics",
		"-e", "127.0.0.1", "-r", strconv.Itoa(peer.port()))
	if err != nil || !strings.Contains(out, "tot_recv_msgs=5") {
		t.Fatalf("turnutils_uclient: %v\n%s", err, out)
	}
	if got := len(peerSources(peer)); got != 5 {
		t.Fatalf("peer got %d datagrams, want 5", got)
	}
	// 5 datagrams of 100 bytes each way, all of them back at the client.
	after := scrape()
	expect(after, `relayd_turn_relayed_bytes_total{direction="local_to_remote"} 500`,
		`relayd_turn_relayed_bytes_total{direction="remote_to_local"} 500`,
		`relayd_turn_refusals_total{reason="pool"} 0`)
	// The client opens more than one allocation (its own tests of the
	// server), so their number is read, not assumed; the status document
	// must tell the same.
	var total uint64
	if _, rest, ok := strings.Cut(after, "\nrelayd_turn_allocations_total "); !ok {
		t.Fatal("metrics lack relayd_turn_allocations_total")
	} else if _, err := fmt.Sscan(rest, &total); err != nil || total == 0 {
		t.Fatalf("relayd_turn_allocations_total %d %v, want some", total, err)
	}
	st, err := rd.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Channels.TURNAllocations == nil || st.TURN == nil || st.TURN.AllocationsTotal != total ||
		*st.Channels.TURNAllocations != st.TURN.AllocationsLive || uint64(st.TURN.AllocationsLive) > total {
		t.Fatalf("status: channels %+v, turn %+v; metrics: %d allocations", st.Channels, st.TURN, total)
	}
	// The call: the one allocation that relayed each way (the client's
	// others only test the server), as the status document counts it.
	expect(after, `relayd_calls_served_total{kind="turn"} 1`, `relayd_calls_served_total{kind="channel"} 0`)
	if st.TURN.AllocationsServed != 1 {
		t.Errorf("status: %d TURN allocations served, want 1", st.TURN.AllocationsServed)
	}
}
