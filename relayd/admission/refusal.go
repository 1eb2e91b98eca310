package admission

// Reason is why a request was refused.
type Reason int

const (
	// Denied: the service's request policy (deny list, allow list, roster)
	// does not admit the requester.
	Denied Reason = iota + 1
	// Draining: the relay is shutting down and takes no new channels.
	Draining
	// QuotaExhausted: a daily or monthly data quota is used up.
	QuotaExhausted
	// RelayFull: the relay holds limits.max_channels channels.
	RelayFull
	// RequesterRate: the requester asked too often this minute.
	RequesterRate
	// RequesterChannels: the requester holds its most live channels.
	RequesterChannels
	// DomainShare: the requester's domain holds its share of the relay.
	DomainShare
)

var reasonNames = [...]string{Denied: "denied", Draining: "draining", QuotaExhausted: "quota_exhausted",
	RelayFull: "relay_full", RequesterRate: "requester_rate", RequesterChannels: "requester_channels",
	DomainShare: "domain_share"}

func (r Reason) String() string {
	if r <= 0 || int(r) >= len(reasonNames) {
		return "unknown"
	}
	return reasonNames[r]
}

// RelayWide reports whether the reason is the relay's state rather than
// anything about the requester: every request is refused alike while it
// holds, so a relay refusing for it should not list itself as available.
func (r Reason) RelayWide() bool {
	return r == Draining || r == QuotaExhausted || r == RelayFull
}

// Refusal is a refused request: why, and a text for the requester.
type Refusal struct {
	Reason Reason
	Text   string
}

func (r *Refusal) Error() string { return r.Text }

func refuse(reason Reason, text string) *Refusal { return &Refusal{Reason: reason, Text: text} }
