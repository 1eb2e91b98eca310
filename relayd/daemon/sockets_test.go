package daemon

import (
	"testing"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/channel"
)

// TestSocketsMode: the data plane's transport for each channel.sockets,
// the built-in TURN server on or off (its relay ports are sockets of
// their own with steered ports too).
func TestSocketsMode(t *testing.T) {
	for _, tc := range []struct {
		sockets config.Sockets
		turn    bool
		want    channel.SocketsMode
	}{
		{"", false, channel.SocketsAuto},
		{config.SocketsPerPort, false, channel.SocketsPerPort},
		{config.SocketsSteered, false, channel.SocketsSteered},
		{config.SocketsSteered, true, channel.SocketsSteered},
		{config.SocketsAuto, false, channel.SocketsAuto},
		{config.SocketsAuto, true, channel.SocketsAuto},
	} {
		cfg := config.Default()
		cfg.Channel.Sockets, cfg.TURN.Builtin.Enabled = tc.sockets, tc.turn
		if got := socketsMode(cfg); got != tc.want {
			t.Errorf("sockets %q, turn %v: %s, want %s", tc.sockets, tc.turn, got, tc.want)
		}
	}
}

// TestStatusShowsSockets: status says what channel.sockets asked for and
// what runs, and why.
func TestStatusShowsSockets(t *testing.T) {
	cfg := testConfig(t)
	cfg.Channel.Sockets = config.SocketsAuto
	d := startDaemon(t, cfg)
	st := d.Status().Sockets
	if st.Mode != "auto" || (st.Active != "per_port" && st.Active != "steered") || st.Why == "" {
		t.Fatalf("status sockets %+v", st)
	}
}
