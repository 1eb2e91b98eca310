package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"

	"github.com/jnrelay/jnrelay/internal/testport"
	"github.com/jnrelay/jnrelay/relayd/turn"
)

func TestBuiltinTURNPart(t *testing.T) {
	cfg := testConfig(t)
	cfg.TURN.Builtin.Enabled = true
	cfg.TURN.Builtin.Port = testport.UDPAndTCP(t)
	state := t.TempDir()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	d, err := New(context.Background(), cfg, Options{Version: "test", StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	if !d.systemRunning(partTURN) {
		t.Fatal("TURN part not running")
	}
	// The generated secret: kept in the state directory, for the owner only.
	path := filepath.Join(state, turn.SecretFile)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("secret file %s: %v %v", path, fi, err)
	}
	secret, _ := os.ReadFile(path)
	secret = bytes.TrimSpace(secret)

	// A provider's own tooling mints credentials from it.
	server := net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.TURN.Builtin.Port))
	newClient := func(id string) *pionturn.Client {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		user := turn.Username(time.Now().Add(time.Hour), id)
		c, err := pionturn.NewClient(&pionturn.ClientConfig{TURNServerAddr: server, STUNServerAddr: server, Username: user,
			Password: turn.Password(secret, user), Realm: cfg.TURN.Builtin.Realm, Conn: conn, RTO: 200 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		return c
	}
	c := newClient("tooling")
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	port := relay.LocalAddr().(*net.UDPAddr).Port
	if port < cfg.Ports.Min || port > cfg.Ports.Max {
		t.Fatalf("relayed port %d outside %d-%d", port, cfg.Ports.Min, cfg.Ports.Max)
	}
	if st := d.Status().TURN; st == nil || st.AllocationsLive != 1 || d.gate.Held() != 1 {
		t.Fatalf("status %+v, gate holds %d", st, d.gate.Held())
	}
	// Beside the channels: in the status document, the status line and
	// the metrics.
	if n := d.Status().Channels.TURNAllocations; n == nil || *n != 1 {
		t.Fatalf("channels' TURN allocations %v, want 1", n)
	}
	if line := d.StatusLine(); !strings.Contains(line, "0/10 channels + 1 TURN,") {
		t.Fatalf("status line %q", line)
	}
	if m, ok := d.MetricsSources().TURN(); !ok || m.AllocationsLive != 1 || m.AllocationsTotal != 1 {
		t.Fatalf("TURN metrics %+v %v", m, ok)
	}
	// In the live list (GET /v1/channels), after the channels, and as
	// JSON of kind "turn"; a channel's kill ends it.
	list := d.LiveList()
	a, ok := list[len(list)-1].(TURNAllocationStatus)
	if !ok || a.Kind != KindTURN || a.Relayed != relay.LocalAddr().String() || a.Requester != "tooling@turn.invalid" || a.Transport != "udp" {
		t.Fatalf("live list %+v, want the allocation at %s last", list, relay.LocalAddr())
	}
	doc, err := json.Marshal(list)
	if err != nil || !strings.Contains(string(doc), `"kind":"turn","id":"`+a.ID+`"`) {
		t.Fatalf("live list JSON %s %v", doc, err)
	}
	killed, err := newClient("killed").Allocate()
	if err != nil {
		t.Fatal(err)
	}
	var killedID string
	for _, x := range d.TURNAllocations() {
		if x.Relayed == killed.LocalAddr().String() {
			killedID = x.ID
		}
	}
	if !d.KillChannel(killedID) || d.KillChannel(killedID+"0") {
		t.Fatalf("kill of TURN allocation %q failed, or of an unknown one succeeded", killedID)
	}
	// The kill closes the relayed socket, which gives the reservation
	// back and leaves the list at once (pion deletes its side after).
	if n := len(d.TURNAllocations()); n != 1 || d.gate.Held() != 1 {
		t.Fatalf("after the kill: %d allocations listed, gate holds %d; want 1, 1", n, d.gate.Held())
	}

	// A drain waits for the allocation and refuses new ones.
	if live := d.Drain(context.Background(), 50*time.Millisecond); live != 1 {
		t.Fatalf("drain left %d calls live, want the TURN allocation", live)
	}
	if _, err := newClient("late").Allocate(); err == nil {
		t.Fatal("TURN allocation while draining")
	}

	// Turned off live: the allocation ends and gives its reservation back.
	next := cfg
	next.TURN.Builtin.Enabled = false
	if err := d.Apply(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	if d.systemRunning(partTURN) || d.Status().TURN != nil || d.gate.Held() != 0 {
		t.Fatalf("after turning TURN off: running %v, gate holds %d", d.systemRunning(partTURN), d.gate.Held())
	}
	if _, ok := d.MetricsSources().TURN(); ok || d.Status().Channels.TURNAllocations != nil {
		t.Fatal("TURN metrics or allocations reported with the TURN server off")
	}
	// And on again: the same secret.
	if err := d.Apply(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(path)
	if !d.systemRunning(partTURN) || !bytes.Equal(bytes.TrimSpace(again), secret) {
		t.Fatal("TURN not restarted on its old secret")
	}
}

func TestBuiltinTURNPortBusy(t *testing.T) {
	cfg := testConfig(t)
	cfg.TURN.Builtin.Enabled = true
	busy, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	cfg.TURN.Builtin.Port = busy.LocalAddr().(*net.UDPAddr).Port
	cfg.TURN.Secret = "a configured secret"
	d := startDaemon(t, cfg)
	// The relay runs without TURN, and does not announce it.
	if d.systemRunning(partTURN) || d.external.Load().TURN != nil || d.Status().TURN != nil {
		t.Fatal("TURN announced or running on a port another program holds")
	}
}
