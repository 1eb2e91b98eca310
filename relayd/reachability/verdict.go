package reachability

import "time"

// Verdict is what a check found out.
type Verdict string

const (
	// Reachable: datagrams nobody asked for reach the port.
	Reachable Verdict = "reachable"
	// NotReachable: they are dropped on the way (NAT, firewall).
	NotReachable Verdict = "not_reachable"
	// CannotTell: the check could not decide (no suitable STUN server,
	// no answer, a NAT that changes ports); Why says which.
	CannotTell Verdict = "cannot_tell"
	// Pending: no check has finished yet.
	Pending Verdict = "pending"
)

// Verdicts lists every verdict, for metrics.
func Verdicts() []Verdict { return []Verdict{Reachable, NotReachable, CannotTell, Pending} }

// Kind says what a probed port is.
type Kind string

const (
	KindRelay Kind = "relay" // a port of the relay range
	KindSTUN  Kind = "stun"  // the STUN server's port
)

// PortResult is one port's verdict.
type PortResult struct {
	Kind    Kind    `json:"kind"`
	Port    int     `json:"port"`
	Verdict Verdict `json:"verdict"`
	// Mapped is the address and port the STUN server saw the port at.
	Mapped string `json:"mapped,omitempty"`
	// From is the address the answer to the change request came from, or
	// was expected from.
	From string `json:"from,omitempty"`
	Why  string `json:"why"`
	// cause classifies a cannot_tell, for the advice.
	cause cause
}

// cause is why a port's verdict is cannot_tell.
type cause int

const (
	causeNone            cause = iota
	causeNoAnswer              // the server did not answer (or stopped)
	causeNoSecondAddress       // the server cannot answer from a second address
	causePortChanged           // the NAT changes the port
	causeLocal                 // the port could not be opened or used
)

func (r PortResult) cannotTell(c cause, why string) PortResult {
	r.Verdict, r.Why, r.cause = CannotTell, why, c
	return r
}

// Report is the outcome of the last check, as `relayd status` shows it.
type Report struct {
	// Verdict is over every port checked: reachable when all are,
	// not_reachable when any is not, else cannot_tell.
	Verdict Verdict `json:"verdict"`
	// RelayPorts and STUN are the verdicts over the relay ports and the
	// STUN port (empty when the STUN server is off).
	RelayPorts Verdict `json:"relay_ports"`
	STUN       Verdict `json:"stun,omitempty"`
	// Summary says in plain words what was found, Advice what to do.
	Summary string `json:"summary"`
	Advice  string `json:"advice,omitempty"`
	// Server is the STUN server asked (as configured) and the address it
	// was reached at.
	Server        string       `json:"server,omitempty"`
	ServerAddress string       `json:"server_address,omitempty"`
	Ports         []PortResult `json:"ports,omitempty"`
	CheckedAt     *time.Time   `json:"checked_at,omitempty"`
	NextCheck     *time.Time   `json:"next_check,omitempty"`
}

// combine is the verdict over several.
func combine(vs []Verdict) Verdict {
	if len(vs) == 0 {
		return CannotTell
	}
	all := true
	for _, v := range vs {
		if v == NotReachable {
			return NotReachable
		}
		all = all && v == Reachable
	}
	if all {
		return Reachable
	}
	return CannotTell
}
