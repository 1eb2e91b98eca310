package load

// Result is what one rtpload process prints as JSON on stdout when it ends.
// A process sends the flows of one side and sinks what arrives from the
// other side, so the packets lost towards a side are the other side's Sent
// minus this side's Received.
type Result struct {
	Side     string  `json:"side"`
	Flows    int     `json:"flows"`
	Size     int     `json:"size"`
	Rate     float64 `json:"rate_pps_per_flow"`
	Duration float64 `json:"duration_s"`

	// Sender.
	Sent        uint64  `json:"sent"`        // measured packets the kernel accepted
	SendErrors  uint64  `json:"send_errors"` // sendmmsg failures (packets not sent)
	Planned     uint64  `json:"planned"`     // flows × rate × duration
	SendBehind  int64   `json:"send_behind_max_ns"`
	PrimesSent  uint64  `json:"primes_sent"`
	SendSeconds float64 `json:"send_seconds"` // first to last measured send

	// Sink.
	Received    uint64      `json:"received"`   // distinct measured packets from the other side
	Duplicates  uint64      `json:"duplicates"` // same flow and sequence number again
	Reordered   uint64      `json:"reordered"`  // arrived after a higher sequence number of its flow
	Bad         uint64      `json:"bad"`        // not a well-formed test packet of the other side
	Misrouted   uint64      `json:"misrouted"`  // right packet at the wrong endpoint or from the wrong source
	Truncated   uint64      `json:"truncated"`  // larger than the receive buffer
	PrimesRecv  uint64      `json:"primes_received"`
	SinkDrops   uint64      `json:"sink_drops"` // dropped by our own sockets (SO_RXQ_OVFL): the sink's fault, not the relay's
	LatP50Ns    int64       `json:"latency_p50_ns"`
	LatP99Ns    int64       `json:"latency_p99_ns"`
	LatMaxNs    int64       `json:"latency_max_ns"`
	Incomplete  int         `json:"flows_incomplete"` // flows that lost at least one packet
	LatencyHist [][2]uint64 `json:"latency_hist"`     // Histogram.Sparse()
}
