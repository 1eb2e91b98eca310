package daemon

import (
	"testing"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// TestSocketsMode: the data plane's transport for each channel.sockets,
// with auto settled as per-port here when the built-in TURN server runs.
func TestSocketsMode(t *testing.T) {
	for _, tc := range []struct {
		sockets config.Sockets
		turn    bool
		want    channel.SocketsMode
		why     bool
	}{
		{"", false, channel.SocketsPerPort, false},
		{config.SocketsPerPort, false, channel.SocketsPerPort, false},
		{config.SocketsSteered, false, channel.SocketsSteered, false},
		{config.SocketsAuto, false, channel.SocketsAuto, false},
		{config.SocketsAuto, true, channel.SocketsPerPort, true},
	} {
		cfg := config.Default()
		cfg.Channel.Sockets, cfg.TURN.Builtin.Enabled = tc.sockets, tc.turn
		got, why := socketsMode(cfg)
		if got != tc.want || (why != "") != tc.why {
			t.Errorf("sockets %q, turn %v: %s (%q), want %s (a reason: %v)", tc.sockets, tc.turn, got, why, tc.want, tc.why)
		}
	}
}

// TestStatusShowsSockets: status says what channel.sockets asked for and
// what runs; turning the built-in TURN server on live is refused while
// auto runs steered ports (and applies where it runs a socket per port).
func TestStatusShowsSockets(t *testing.T) {
	cfg := testConfig(t)
	cfg.Channel.Sockets = config.SocketsAuto
	d := startDaemon(t, cfg)
	st := d.Status().Sockets
	if st.Mode != "auto" || (st.Active != "per_port" && st.Active != "steered") || st.Why == "" {
		t.Fatalf("status sockets %+v", st)
	}
	next := cfg
	next.TURN.Builtin.Enabled = true
	err := d.steeredRefuses(next)
	if (st.Active == "steered") != (err != nil) {
		t.Fatalf("running %s, turning TURN on: %v", st.Active, err)
	}
}
