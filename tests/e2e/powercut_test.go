package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// TestConfigSurvivesKillDuringWrites kills relayd with SIGKILL at random
// moments while configuration changes stream in through its API: after
// every kill the file on disk is a complete old or new configuration, and
// relayd starts from it again. Loopback only; no XMPP server is needed
// (the service just keeps retrying).
func TestConfigSurvivesKillDuringWrites(t *testing.T) {
	const rounds = 150
	dir := t.TempDir()
	cfg := config.Default()
	cfg.PublicAddress, cfg.ListenAddress = "127.0.0.1", "127.0.0.1"
	cfg.Ports = config.PortRange{Min: 29000, Max: 29099} // below the ephemeral range
	cfg.STUN.Enabled = false
	cfg.XMPP = []config.Service{{Name: "nowhere", Type: "component", Server: "127.0.0.1:9", Domain: "relay.localhost", Secret: "s"}}
	cfg.Reconnect = config.Reconnect{MinSeconds: 5, MaxSeconds: 5}
	writes, kills := 0, 0
	var start any = cfg // the first round writes the file; later ones start from what is on disk
	for round := range rounds {
		rd, err := harness.StartRelaydArgs(relaydBin, "", dir, start)
		start = nil
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // bounds the start and the writes
		if _, err := rd.WaitLog(ctx, "provisioning API listening", 1, nil); err != nil {
			cancel()
			rd.Kill()
			t.Fatalf("round %d: relayd did not start from the file on disk: %v\n%s", round, err, rd.Logs())
		}
		api := provision.NewClient(rd.APISocket)
		killAt := time.Now().Add(time.Duration(rand.IntN(40)) * time.Millisecond)
		for time.Now().Before(killAt) || writes == 0 {
			patch := fmt.Sprintf(`{"channel": {"max_kbps": %d}}`, 100+writes)
			if _, err := api.PatchConfig(ctx, []byte(patch), ""); err != nil {
				t.Fatalf("round %d: patch: %v", round, err)
			}
			writes++
		}
		// One more write in flight while the process dies.
		go api.PatchConfig(ctx, []byte(fmt.Sprintf(`{"channel": {"max_kbps": %d}}`, 100+writes)), "")
		if err := rd.Kill(); err != nil {
			t.Fatal(err)
		}
		kills++
		cancel()
		api.Close()
		got, err := config.Load(filepath.Join(dir, "relayd.json"))
		if err != nil {
			t.Fatalf("round %d: after SIGKILL the file is not a complete configuration: %v", round, err)
		}
		if got.Channel.MaxKbps < 100 || got.Channel.MaxKbps > 100+writes {
			t.Fatalf("round %d: max_kbps %d is neither an old nor a new value (writes %d)", round, got.Channel.MaxKbps, writes)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "relayd.json.last-good")); err != nil {
		t.Fatalf("no last-good copy: %v", err)
	}
	t.Logf("%d kills during %d configuration writes; the file was whole every time", kills, writes)
}
