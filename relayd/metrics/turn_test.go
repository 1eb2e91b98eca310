package metrics

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The TURN families, line by line as a scraper reads them: every refusal
// reason of the turn package at zero until it happens, unknown ones
// folded into other, the bytes by the channels' direction names.
func TestTURNExposition(t *testing.T) {
	src := Sources{TURN: func() (TURN, bool) {
		return TURN{AllocationsLive: 3, AllocationsTotal: 41,
			Refused:      map[string]uint64{"pool": 2, "admission": 5, "from_the_future": 7},
			BytesToPeers: 123456, BytesFromPeers: 654321}, true
	}}
	var w textWriter
	newCollector(src, "dev").write(&w)
	want := `# HELP relayd_turn_allocations TURN allocations open now on the built-in TURN server; each holds a relay port of the channels' range.
# TYPE relayd_turn_allocations gauge
relayd_turn_allocations 3
# HELP relayd_turn_allocations_total TURN allocations opened since the built-in TURN server started.
# TYPE relayd_turn_allocations_total counter
relayd_turn_allocations_total 41
# HELP relayd_turn_refusals_total Requests, datagrams and peers the built-in TURN server refused, by reason (pool: no relay port free; admission: the requester's or the relay's limits).
# TYPE relayd_turn_refusals_total counter
relayd_turn_refusals_total{reason="auth"} 0
relayd_turn_refusals_total{reason="admission"} 5
relayd_turn_refusals_total{reason="pool"} 2
relayd_turn_refusals_total{reason="peer"} 0
relayd_turn_refusals_total{reason="rate_limit"} 0
relayd_turn_refusals_total{reason="no_address"} 0
relayd_turn_refusals_total{reason="addr_family"} 0
relayd_turn_refusals_total{reason="tls_source"} 0
relayd_turn_refusals_total{reason="amplification"} 0
relayd_turn_refusals_total{reason="other"} 7
# HELP relayd_turn_relayed_bytes_total Payload bytes the built-in TURN server relayed, by direction (local is the TURN client, remote its peers).
# TYPE relayd_turn_relayed_bytes_total counter
relayd_turn_relayed_bytes_total{direction="local_to_remote"} 123456
relayd_turn_relayed_bytes_total{direction="remote_to_local"} 654321
`
	got := string(w.buf)
	_, got, _ = strings.Cut(got, "\n# HELP relayd_turn_")
	got = "# HELP relayd_turn_" + got
	if got != want {
		t.Errorf("TURN families:\n%s\nwant:\n%s", got, want)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(w.buf))
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, w.buf)
	}
	if got := series(fams["relayd_turn_refusals_total"])["reason=pool"]; got != 2 {
		t.Errorf("parsed pool refusals = %v, want 2", got)
	}
}

// A relay without the built-in TURN server exports no relayd_turn_*
// series, not zeros that would look like an idle server; the series
// appear once the configuration turns it on.
func TestTURNOnlyWhenConfigured(t *testing.T) {
	configured := false
	src := Sources{TURN: func() (TURN, bool) { return TURN{}, configured }}
	reg := NewRegistry(src, "dev")
	if text := string(reg.AppendText(nil)); strings.Contains(text, "relayd_turn_") {
		t.Errorf("TURN series without the TURN server:\n%s", text)
	}
	configured = true
	if text := string(reg.AppendText(nil)); !strings.Contains(text, "\nrelayd_turn_allocations 0\n") {
		t.Errorf("no relayd_turn_allocations 0 once configured:\n%s", text)
	}
}
