package metrics

// CallsServed counts the calls the relay served since it started: the
// channels and the built-in TURN server's allocations that relayed at
// least one datagram each way, live or ended. Both only grow until relayd
// restarts: TURN counts whatever earlier TURN servers served before a
// live reconfiguration stopped them (and 0 on a relay that never ran
// one).
type CallsServed struct {
	Channels, TURN uint64
}

// callKinds are the kind label's values, channels first.
var callKinds = [...]string{"channel", "turn"}

// callsServedFamily is relayd_calls_served_total, the counter behind the
// usage history's calls (GET /v1/usage): a served call is one that
// carried media, not a channel a client asked for and never used.
func callsServedFamily() family {
	return family{name: "relayd_calls_served_total", typ: counterType, labels: []string{"kind"},
		help: "Calls served since relayd started: channels (kind=channel) and built-in TURN allocations (kind=turn) that relayed at least one datagram each way."}
}

// writeCallsServed writes both kinds, at zero until a call is served, so
// that rate() and increase() see the first one.
func writeCallsServed(w *textWriter, f *family, c CallsServed) {
	w.uint(f, c.Channels, callKinds[0])
	w.uint(f, c.TURN, callKinds[1])
}
