package metrics

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// fakeSources returns Sources whose values come from the returned live
// counter, so tests can move them between scrapes.
func fakeSources() (Sources, *atomic.Uint64) {
	var n atomic.Uint64
	n.Store(1)
	src := Sources{
		DataPlane: func() DataPlane {
			k := n.Load()
			return DataPlane{
				ActiveChannels: 7, Capacity: 250,
				PacketsLocalToRemote: 100 * k, PacketsRemoteToLocal: 90 * k,
				BytesLocalToRemote: 16000 * k, BytesRemoteToLocal: 14400 * k,
				Dropped: map[string]uint64{
					"peer_not_latched": 3 * k, "foreign_source": 5, "kernel": 2,
					"something_new": 4, "another_new": 1, // unknown: folded into other
				},
				Relatched: 1, Segmented: 45, SprayersBlocked: 2, SprayersBlockedTotal: 3,
			}
		},
		Sessions: func() []Session {
			return []Session{
				{Name: "relay.example.org", State: "online", Connects: 3},
				{Name: "donor@example.net", State: "backoff", Connects: 1},
				{Name: "relay.example.org", State: "stopped", Connects: 99}, // duplicate: ignored
			}
		},
		STUN: func() STUNStats {
			return STUNStats{Requests: 50, Responses: 40, Dropped: map[string]uint64{"not_stun": 6, "bad_cookie": 4}}
		},
		Requests: func() Requests {
			return Requests{Granted: 12 * n.Load(), Refused: map[string]uint64{
				"resource_constraint": 2, "forbidden": 3, "internal": 1, "weird": 5, "policy_violation": 4,
				"domain_limit": 7,
			}}
		},
		Usage: func() Usage {
			return Usage{DayBytes: 2e6, MonthBytes: 9e8, MonthlyQuotaBytes: 1e9, Exhausted: false}
		},
		TURN: func() (TURN, bool) {
			k := n.Load()
			return TURN{AllocationsLive: 2, AllocationsTotal: 9 * k,
				Refused:      map[string]uint64{"auth": 4, "pool": 1, "peer": 6 * k, "brand_new": 2},
				BytesToPeers: 5000 * k, BytesFromPeers: 7000}, true
		},
		Reachability: func() Reachability {
			return Reachability{RelayPorts: "not_reachable", STUN: "reachable", CheckedAt: 1_800_000_000}
		},
		CallsServed: func() CallsServed {
			return CallsServed{Channels: 11 * n.Load(), TURN: 4}
		},
	}
	return src, &n
}

// scrape fetches /metrics from h as Prometheus would and parses the text
// format with the legacy name rules, which older Prometheus servers need.
func scrape(t testing.TB, h http.Handler) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	req, err := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("Content-Type %q, want text/plain", ct)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse /metrics: %v\n%s", err, body)
	}
	return fams
}

// series flattens a family into "label=value,..." -> value.
func series(f *dto.MetricFamily) map[string]float64 {
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		var v float64
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			v = m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			v = m.GetGauge().GetValue()
		case dto.MetricType_UNTYPED:
			v = m.GetUntyped().GetValue()
		default:
			v = math.NaN()
		}
		out[labelKey(m)] = v
	}
	return out
}

func labelKey(m *dto.Metric) string {
	var parts []string
	for _, l := range m.GetLabel() {
		parts = append(parts, l.GetName()+"="+l.GetValue())
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

func TestScrape(t *testing.T) {
	src, _ := fakeSources()
	fams := scrape(t, Handler(NewRegistry(src, "v1.2.3")))

	type want struct {
		typ    dto.MetricType
		series map[string]float64
	}
	C, G := dto.MetricType_COUNTER, dto.MetricType_GAUGE
	tests := map[string]want{
		"relayd_build_info":        {G, map[string]float64{"goversion=" + runtime.Version() + ",version=v1.2.3": 1}},
		"relayd_channels_active":   {G, map[string]float64{"": 7}},
		"relayd_channels_capacity": {G, map[string]float64{"": 250}},
		"relayd_relayed_packets_total": {C, map[string]float64{
			"direction=local_to_remote": 100, "direction=remote_to_local": 90}},
		"relayd_relayed_bytes_total": {C, map[string]float64{
			"direction=local_to_remote": 16000, "direction=remote_to_local": 14400}},
		"relayd_dropped_packets_total": {C, map[string]float64{
			"reason=peer_not_latched": 3, "reason=foreign_source": 5, "reason=rate_limited": 0,
			"reason=oversize": 0, "reason=send_error": 0, "reason=foreign_source_kernel": 0, "reason=no_channel": 0, "reason=kernel": 2, "reason=other": 5,
			"reason=forbidden_peer": 0, "reason=sprayer": 0, "reason=unconfirmed_peer": 0, "reason=packet_ceiling": 0}},
		"relayd_relatched_total":         {C, map[string]float64{"": 1}},
		"relayd_segmented_packets_total": {C, map[string]float64{"": 45}},
		"relayd_sprayers_blocked":        {G, map[string]float64{"": 2}},
		"relayd_sprayers_blocked_total":  {C, map[string]float64{"": 3}},
		"relayd_channel_requests_total": {C, map[string]float64{
			"result=granted": 12, "result=resource_constraint": 2, "result=forbidden": 3, "result=bad_request": 0,
			"result=feature_not_implemented": 0, "result=service_unavailable": 0, "result=internal": 1,
			"result=policy_violation": 4, "result=domain_limit": 7, "result=other": 5}},
		"relayd_donated_bytes":   {G, map[string]float64{"period=day": 2e6, "period=month": 9e8}},
		"relayd_quota_bytes":     {G, map[string]float64{"period=day": 0, "period=month": 1e9}},
		"relayd_quota_exhausted": {G, map[string]float64{"": 0}},
		"relayd_allocation_failures_total": {C, map[string]float64{
			"reason=resource_constraint": 2, "reason=service_unavailable": 0, "reason=internal": 1}},
		"relayd_xmpp_session_up": {G, map[string]float64{
			"service=relay.example.org": 1, "service=donor@example.net": 0}},
		"relayd_xmpp_session_state": {G, map[string]float64{
			"service=relay.example.org,state=online": 1, "service=relay.example.org,state=connecting": 0,
			"service=relay.example.org,state=backoff": 0, "service=relay.example.org,state=stopped": 0,
			"service=donor@example.net,state=online": 0, "service=donor@example.net,state=connecting": 0,
			"service=donor@example.net,state=backoff": 1, "service=donor@example.net,state=stopped": 0}},
		"relayd_xmpp_session_connects_total": {C, map[string]float64{
			"service=relay.example.org": 3, "service=donor@example.net": 1}},
		"relayd_turn_allocations":       {G, map[string]float64{"": 2}},
		"relayd_turn_allocations_total": {C, map[string]float64{"": 9}},
		"relayd_turn_refusals_total": {C, map[string]float64{
			"reason=auth": 4, "reason=admission": 0, "reason=pool": 1, "reason=peer": 6, "reason=rate_limit": 0, "reason=tls_source": 0,
			"reason=no_address": 0, "reason=addr_family": 0, "reason=amplification": 0, "reason=other": 2}},
		"relayd_turn_relayed_bytes_total": {C, map[string]float64{
			"direction=local_to_remote": 5000, "direction=remote_to_local": 7000}},
		"relayd_stun_requests_total":  {C, map[string]float64{"": 50}},
		"relayd_stun_responses_total": {C, map[string]float64{"": 40}},
		"relayd_stun_dropped_total": {C, map[string]float64{
			"reason=not_stun": 6, "reason=truncated": 0, "reason=bad_length": 0, "reason=bad_cookie": 4,
			"reason=bad_attribute": 0, "reason=bad_fingerprint": 0, "reason=not_binding": 0,
			"reason=indication": 0, "reason=response": 0, "reason=unknown_attribute": 0, "reason=bad_source": 0,
			"reason=oversize": 0, "reason=send_error": 0, "reason=rate_limited": 0, "reason=source_rate_limited": 0}},
		"relayd_reachability": {G, map[string]float64{
			"check=relay_ports,verdict=reachable": 0, "check=relay_ports,verdict=not_reachable": 1,
			"check=relay_ports,verdict=cannot_tell": 0, "check=relay_ports,verdict=pending": 0,
			"check=stun,verdict=reachable": 1, "check=stun,verdict=not_reachable": 0,
			"check=stun,verdict=cannot_tell": 0, "check=stun,verdict=pending": 0}},
		"relayd_reachability_checked_timestamp_seconds": {G, map[string]float64{"": 1.8e9}},
		"relayd_calls_served_total":                     {C, map[string]float64{"kind=channel": 11, "kind=turn": 4}},
	}
	for name, w := range tests {
		t.Run(name, func(t *testing.T) {
			f, ok := fams[name]
			if !ok {
				t.Fatalf("%s not exported", name)
			}
			if f.GetType() != w.typ {
				t.Errorf("type %v, want %v", f.GetType(), w.typ)
			}
			if f.GetHelp() == "" {
				t.Error("no HELP")
			}
			got := series(f)
			if len(got) != len(w.series) {
				t.Errorf("%d series %v, want %d %v", len(got), got, len(w.series), w.series)
			}
			for k, v := range w.series {
				if g, ok := got[k]; !ok || g != v {
					t.Errorf("{%s} = %v (present %v), want %v", k, g, ok, v)
				}
			}
		})
	}
	for name := range fams {
		if strings.HasPrefix(name, "relayd_") {
			if _, ok := tests[name]; !ok {
				t.Errorf("%s exported but not tested", name)
			}
		}
	}
	// The runtime and process metrics the dashboard and alert rules use.
	for _, name := range []string{"go_goroutines", "go_memstats_heap_inuse_bytes", "go_gc_gomemlimit_bytes",
		"process_resident_memory_bytes", "process_open_fds", "process_max_fds", "process_start_time_seconds",
		"process_cpu_seconds_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("%s not exported", name)
		}
	}
}

// Counters follow their sources from scrape to scrape: nothing is cached
// or only updated when a channel ends.
func TestCountersLive(t *testing.T) {
	src, n := fakeSources()
	h := Handler(NewRegistry(src, "dev"))
	for _, k := range []uint64{1, 2, 5} {
		n.Store(k)
		fams := scrape(t, h)
		if got := series(fams["relayd_relayed_packets_total"])["direction=local_to_remote"]; got != float64(100*k) {
			t.Errorf("k=%d: packets local_to_remote = %v, want %v", k, got, 100*k)
		}
		if got := series(fams["relayd_dropped_packets_total"])["reason=peer_not_latched"]; got != float64(3*k) {
			t.Errorf("k=%d: dropped peer_not_latched = %v, want %v", k, got, 3*k)
		}
		if got := series(fams["relayd_channel_requests_total"])["result=granted"]; got != float64(12*k) {
			t.Errorf("k=%d: granted = %v, want %v", k, got, 12*k)
		}
		if got := series(fams["relayd_turn_allocations_total"])[""]; got != float64(9*k) {
			t.Errorf("k=%d: TURN allocations = %v, want %v", k, got, 9*k)
		}
		if got := series(fams["relayd_turn_refusals_total"])["reason=peer"]; got != float64(6*k) {
			t.Errorf("k=%d: TURN peer refusals = %v, want %v", k, got, 6*k)
		}
		if got := series(fams["relayd_calls_served_total"])["kind=channel"]; got != float64(11*k) {
			t.Errorf("k=%d: channel calls served = %v, want %v", k, got, 11*k)
		}
	}
}

// A nil source leaves its metrics out instead of exporting zeros that
// would look like an idle component.
func TestNilSources(t *testing.T) {
	fams := scrape(t, Handler(NewRegistry(Sources{}, "dev")))
	for name := range fams {
		if strings.HasPrefix(name, "relayd_") && name != "relayd_build_info" {
			t.Errorf("%s exported with no sources", name)
		}
	}
	if _, ok := fams["relayd_build_info"]; !ok {
		t.Error("relayd_build_info missing")
	}
}

// allowedLabels is, per metric, every label name and the values it may
// take: the fixed sets, plus "other" where unknown keys are folded. A nil
// set means "bounded by configuration" (checked separately).
func allowedLabels() map[string]map[string][]string {
	withOther := func(s []string) []string { return append(slices.Clone(s), other) }
	return map[string]map[string][]string{
		"relayd_build_info":                  {"version": nil, "goversion": {runtime.Version()}},
		"relayd_channels_active":             {},
		"relayd_channels_capacity":           {},
		"relayd_relayed_packets_total":       {"direction": directions[:]},
		"relayd_relayed_bytes_total":         {"direction": directions[:]},
		"relayd_dropped_packets_total":       {"reason": withOther(dropReasons[:])},
		"relayd_relatched_total":             {},
		"relayd_segmented_packets_total":     {},
		"relayd_sprayers_blocked":            {},
		"relayd_sprayers_blocked_total":      {},
		"relayd_channel_requests_total":      {"result": withOther(append([]string{"granted"}, refusalReasons[:]...))},
		"relayd_allocation_failures_total":   {"reason": allocationFailureReasons[:]},
		"relayd_xmpp_session_up":             {"service": nil},
		"relayd_xmpp_session_state":          {"service": nil, "state": sessionStates[:]},
		"relayd_xmpp_session_connects_total": {"service": nil},
		"relayd_stun_requests_total":         {},
		"relayd_stun_responses_total":        {},
		"relayd_stun_dropped_total":          {"reason": withOther(stunDropReasons[:])},
		"relayd_turn_allocations":            {},
		"relayd_turn_allocations_total":      {},
		"relayd_turn_refusals_total":         {"reason": withOther(turnRefusalReasons)},
		"relayd_turn_relayed_bytes_total":    {"direction": directions[:]},
		"relayd_calls_served_total":          {"kind": callKinds[:]},
	}
}

// Whatever keys and names the sources report, the exported label values
// stay inside the fixed sets, and the only open-ended label (service)
// takes exactly the configured session names.
func TestBoundedCardinality(t *testing.T) {
	hostile := map[string]uint64{}
	for i := range 1000 {
		hostile[fmt.Sprintf("reason-%d", i)] = 1
	}
	hostile["foreign_source"] = 7
	var sessions []Session
	names := map[string]bool{}
	for i := range 5 {
		name := fmt.Sprintf("svc%d", i)
		names[name] = true
		sessions = append(sessions, Session{Name: name, State: []string{"online", "weird", "", "backoff", "stopped"}[i]})
	}
	src := Sources{
		DataPlane: func() DataPlane { return DataPlane{Dropped: hostile} },
		Sessions:  func() []Session { return sessions },
		STUN:      func() STUNStats { return STUNStats{Dropped: hostile} },
		Requests:  func() Requests { return Requests{Refused: hostile} },
		TURN:      func() (TURN, bool) { return TURN{Refused: hostile}, true },
		// Fixed labels: here for the allowed set's sake.
		CallsServed: func() CallsServed { return CallsServed{Channels: 1, TURN: 1} },
	}
	fams := scrape(t, Handler(NewRegistry(src, "dev")))
	allowed := allowedLabels()
	for name, f := range fams {
		if !strings.HasPrefix(name, "relayd_") {
			continue
		}
		labels, ok := allowed[name]
		if !ok {
			t.Errorf("%s: not in the allowed set", name)
			continue
		}
		for _, m := range f.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				t.Errorf("%s{%s}: want labels %v", name, labelKey(m), labels)
			}
			for _, l := range m.GetLabel() {
				values, ok := labels[l.GetName()]
				switch {
				case !ok:
					t.Errorf("%s: unexpected label %s", name, l.GetName())
				case l.GetName() == "service":
					if !names[l.GetValue()] {
						t.Errorf("%s: service=%q is not a configured session", name, l.GetValue())
					}
				case values != nil && !slices.Contains(values, l.GetValue()):
					t.Errorf("%s: %s=%q outside %v", name, l.GetName(), l.GetValue(), values)
				}
			}
		}
	}
	// 1000 unknown reasons, one series.
	if got := series(fams["relayd_dropped_packets_total"])["reason=other"]; got != 1000 {
		t.Errorf("dropped other = %v, want 1000", got)
	}
	if got := len(fams["relayd_dropped_packets_total"].GetMetric()); got != len(dropReasons)+1 {
		t.Errorf("%d dropped series, want %d", got, len(dropReasons)+1)
	}
	// A session in an unknown state is down and in no known state.
	up := series(fams["relayd_xmpp_session_up"])
	if up["service=svc0"] != 1 || up["service=svc1"] != 0 || up["service=svc2"] != 0 {
		t.Errorf("session_up = %v", up)
	}
	state := series(fams["relayd_xmpp_session_state"])
	for _, st := range sessionStates {
		if v := state["service=svc1,state="+st]; v != 0 {
			t.Errorf("svc1 (state weird) state=%s = %v, want 0", st, v)
		}
	}
}

// The fixed sets hold no duplicates and only valid label values, and
// allocation failures are a subset of the refusal reasons.
func TestLabelSets(t *testing.T) {
	for name, set := range map[string][]string{
		"directions": directions[:], "dropReasons": dropReasons[:], "refusalReasons": refusalReasons[:],
		"allocationFailureReasons": allocationFailureReasons[:], "sessionStates": sessionStates[:],
		"stunDropReasons": stunDropReasons[:], "turnRefusalReasons": turnRefusalReasons,
	} {
		seen := map[string]bool{}
		for _, v := range set {
			if seen[v] || v == other || v == "" || strings.ToLower(v) != v {
				t.Errorf("%s: bad or repeated value %q", name, v)
			}
			seen[v] = true
		}
	}
	for _, r := range allocationFailureReasons {
		if !slices.Contains(refusalReasons[:], r) {
			t.Errorf("allocation failure reason %q is not a refusal reason", r)
		}
	}
}

// Label values that are not UTF-8 are repaired, not passed on: a scraper
// rejects a whole scrape for one bad value.
func TestInvalidUTF8Repaired(t *testing.T) {
	src := Sources{Sessions: func() []Session { return []Session{{Name: "bad\xffname", State: "online"}} }}
	fams := scrape(t, Handler(NewRegistry(src, "dev\xff")))
	if got := series(fams["relayd_xmpp_session_up"]); got["service=bad\uFFFDname"] != 1 {
		t.Errorf("session_up = %v, want the repaired name", got)
	}
	if got := series(fams["relayd_build_info"]); got["goversion="+runtime.Version()+",version=dev\uFFFD"] != 1 {
		t.Errorf("build_info = %v, want the repaired version", got)
	}
}

// Scrapes may run at once (two Prometheus servers); the collectors keep
// no state, so the race detector must stay quiet and every scrape must be
// whole.
func TestConcurrentScrapes(t *testing.T) {
	src, n := fakeSources()
	reg := NewRegistry(src, "dev")
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			var buf []byte
			for range 20 {
				n.Store(uint64(i))
				buf = reg.AppendText(buf[:0])
				p := expfmt.NewTextParser(model.LegacyValidation)
				if _, err := p.TextToMetricFamilies(bytes.NewReader(buf)); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkAppendText is the cost of one scrape's text, paid only when
// Prometheus asks.
func BenchmarkAppendText(b *testing.B) {
	src, _ := fakeSources()
	reg := NewRegistry(src, "dev")
	var buf []byte
	b.ReportAllocs()
	for b.Loop() {
		buf = reg.AppendText(buf[:0])
	}
	b.SetBytes(int64(len(buf)))
}

// BenchmarkAppendTextRelayd is relayd's own share of a scrape, without the
// Go runtime and process metrics.
func BenchmarkAppendTextRelayd(b *testing.B) {
	src, _ := fakeSources()
	c := newCollector(src, "dev")
	var w textWriter
	b.ReportAllocs()
	for b.Loop() {
		w = textWriter{buf: w.buf[:0]}
		c.write(&w)
	}
}

// BenchmarkScrape is a whole HTTP scrape in the text format.
func BenchmarkScrape(b *testing.B) {
	src, _ := fakeSources()
	h := Handler(NewRegistry(src, "dev"))
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
