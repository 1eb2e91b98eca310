package admission

// Ticket is an admitted request's reservation: it counts against every
// limit from Reserve until it is cancelled (the channel could not be
// opened) or released (the channel ended).
type Ticket struct {
	gate        *Gate
	key, domain string // the requester's bare JID and domain
	state       ticketState
	channel     string
}

type ticketState int

const (
	reserved  ticketState = iota // admitted, channel not yet open
	committed                    // the channel is open
	returned                     // cancelled or released
)

// Commit records that the data plane opened the channel channelID: the
// reservation is now the channel's, until Release.
func (t *Ticket) Commit(channelID string) {
	t.gate.mu.Lock()
	defer t.gate.mu.Unlock()
	if t.state == reserved {
		t.state, t.channel = committed, channelID
	}
}

// Cancel gives the reservation back because the channel could not be
// opened. After Commit it does nothing, so it can be deferred.
func (t *Ticket) Cancel() {
	t.gate.mu.Lock()
	defer t.gate.mu.Unlock()
	if t.state == reserved {
		t.gate.giveBackLocked(t)
	}
}

// Release gives the reservation back because the channel ended. Calling
// it again does nothing.
func (t *Ticket) Release() {
	t.gate.mu.Lock()
	defer t.gate.mu.Unlock()
	t.gate.giveBackLocked(t)
}

// Channel is the id Commit recorded ("" before).
func (t *Ticket) Channel() string {
	t.gate.mu.Lock()
	defer t.gate.mu.Unlock()
	return t.channel
}
