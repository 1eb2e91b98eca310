package metrics

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/model"
	"go.yaml.in/yaml/v3"
)

// The files in docs/monitoring are checked here because promtool is not
// at hand: the rules are decoded strictly (as Prometheus does), and every
// metric, label and label value an expression names must exist in what
// relayd exports, so renaming a metric breaks the build, not the alerts.

const (
	rulesFile     = "../../docs/monitoring/relayd-alerts.yml"
	dashboardFile = "../../docs/monitoring/relayd-dashboard.json"
)

// ruleFile mirrors Prometheus' rule file format (rulefmt); decoding with
// KnownFields rejects misspelt keys the way Prometheus' loader does.
type ruleFile struct {
	Groups []struct {
		Name     string `yaml:"name"`
		Interval string `yaml:"interval"`
		Rules    []struct {
			Alert         string            `yaml:"alert"`
			Record        string            `yaml:"record"`
			Expr          string            `yaml:"expr"`
			For           string            `yaml:"for"`
			KeepFiringFor string            `yaml:"keep_firing_for"`
			Labels        map[string]string `yaml:"labels"`
			Annotations   map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func TestAlertRules(t *testing.T) {
	data, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var rf ruleFile
	if err := dec.Decode(&rf); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if len(rf.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	exported := exportedFamilies(t)
	alertName := regexp.MustCompile(`^[A-Z][A-Za-z0-9]+$`)
	alerts := map[string]bool{}
	byAlert := map[string]string{} // alert -> expr
	for _, g := range rf.Groups {
		if g.Name == "" {
			t.Error("group without a name")
		}
		for _, r := range g.Rules {
			if r.Record != "" || r.Alert == "" {
				t.Errorf("group %s: only alerting rules expected, got %+v", g.Name, r)
				continue
			}
			if !alertName.MatchString(r.Alert) || alerts[r.Alert] {
				t.Errorf("alert %q: bad or repeated name", r.Alert)
			}
			alerts[r.Alert] = true
			byAlert[r.Alert] = r.Expr
			for _, d := range []string{r.For, r.KeepFiringFor} {
				if _, err := model.ParseDuration(d); d != "" && err != nil {
					t.Errorf("alert %s: %v", r.Alert, err)
				}
			}
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("alert %s: severity %q, want warning or critical", r.Alert, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: summary and description annotations required", r.Alert)
			}
			for _, err := range checkExpr(r.Expr, exported) {
				t.Errorf("alert %s: %v", r.Alert, err)
			}
		}
	}
	// The flood rule names exactly the malformed STUN reasons, the first
	// six of stunDropReasons (stun.DropReason.Malformed).
	flood := regexp.MustCompile(`relayd_stun_dropped_total\{reason=~"([^"]*)"\}`).FindStringSubmatch(byAlert["RelaydSTUNMalformedFlood"])
	if flood == nil || !slices.Equal(strings.Split(flood[1], "|"), stunDropReasons[:6]) {
		t.Errorf("RelaydSTUNMalformedFlood: reasons %v, want %v", flood, stunDropReasons[:6])
	}
	// The alerts the monitoring README promises.
	for _, a := range []string{"RelaydDown", "RelaydXMPPSessionDown", "RelaydChannelsNearCapacity",
		"RelaydForeignSourceDropsSpike", "RelaydKernelDrops", "RelaydSTUNMalformedFlood", "RelaydSprayerBlocked", "RelaydPacketCeiling"} {
		if !alerts[a] {
			t.Errorf("alert %s missing", a)
		}
	}
}

func TestDashboard(t *testing.T) {
	data, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		UID, Title    string
		SchemaVersion int
		Templating    struct{ List []map[string]any }
		Panels        []struct {
			ID         int
			Type       string
			Title      string
			Datasource map[string]string
			Targets    []struct{ Expr, RefID string }
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dash.UID == "" || dash.Title == "" || dash.SchemaVersion == 0 {
		t.Errorf("uid %q, title %q, schemaVersion %d: all required", dash.UID, dash.Title, dash.SchemaVersion)
	}
	exported := exportedFamilies(t)
	ids := map[int]bool{}
	var exprs int
	for _, p := range dash.Panels {
		if p.ID == 0 || ids[p.ID] {
			t.Errorf("panel %q: id %d missing or repeated", p.Title, p.ID)
		}
		ids[p.ID] = true
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q: no queries", p.Title)
		}
		// Every panel follows the dashboard's data source variable, so
		// the dashboard imports into any Grafana.
		if p.Datasource["uid"] != "${datasource}" {
			t.Errorf("panel %q: datasource %v, want ${datasource}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			exprs++
			for _, err := range checkExpr(tg.Expr, exported) {
				t.Errorf("panel %q %s: %v", p.Title, tg.RefID, err)
			}
		}
	}
	for _, v := range dash.Templating.List {
		if q, ok := v["definition"].(string); ok {
			for _, err := range checkExpr(q, exported) {
				t.Errorf("variable %v: %v", v["name"], err)
			}
		}
	}
	// What the README promises to show.
	for _, name := range []string{"relayd_channels_active", "relayd_relayed_packets_total",
		"relayd_relayed_bytes_total", "relayd_dropped_packets_total", "relayd_xmpp_session_up",
		"relayd_channel_requests_total"} {
		if !bytes.Contains(data, []byte(name)) {
			t.Errorf("dashboard does not show %s", name)
		}
	}
	if exprs == 0 {
		t.Error("no queries in the dashboard")
	}
}

// exportedFamilies scrapes a registry fed by every source.
func exportedFamilies(t *testing.T) map[string]*dto.MetricFamily {
	src, _ := fakeSources()
	return scrape(t, Handler(NewRegistry(src, "dev")))
}

var (
	// A selector: a metric name followed by label matchers.
	selectorRE = regexp.MustCompile(`([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}`)
	matcherRE  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
	// Names that are ours to check: relayd's own and the Go and process
	// collectors'.
	metricRE = regexp.MustCompile(`\b(relayd|go|process)_[a-zA-Z0-9_:]*`)
	// Functions that need a counter.
	counterFnRE = regexp.MustCompile(`\b(rate|irate|increase)\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)`)
	// Grouping clauses name labels.
	groupingRE = regexp.MustCompile(`\b(by|without|on|ignoring)\s*\(([^)]*)\)`)
	// Labels every scraped series gets from Prometheus, not from relayd.
	targetLabels = []string{"job", "instance"}
)

// checkExpr is a reference check, not a PromQL parser: it finds metric
// names, label matchers and grouping labels with regular expressions,
// which is enough for the expressions in docs/monitoring.
func checkExpr(expr string, fams map[string]*dto.MetricFamily) []error {
	var errs []error
	if strings.TrimSpace(expr) == "" {
		return []error{fmt.Errorf("empty expression")}
	}
	if strings.Count(expr, "(") != strings.Count(expr, ")") || strings.Count(expr, "{") != strings.Count(expr, "}") {
		errs = append(errs, fmt.Errorf("unbalanced brackets in %q", expr))
	}
	// Strip quoted strings before looking for names, so label values such
	// as "relayd" are not taken for metrics.
	bare := regexp.MustCompile(`"[^"]*"`).ReplaceAllString(expr, `""`)
	used := map[string]bool{}
	for _, name := range metricRE.FindAllString(bare, -1) {
		used[name] = true
		if _, ok := fams[name]; !ok {
			errs = append(errs, fmt.Errorf("metric %s is not exported", name))
		}
	}
	allowed := allowedLabels()
	for _, m := range selectorRE.FindAllStringSubmatch(expr, -1) {
		name, f := m[1], fams[m[1]]
		if f == nil {
			continue // reported above, or "up"
		}
		labels := familyLabels(f)
		for _, mm := range matcherRE.FindAllStringSubmatch(m[2], -1) {
			label, op, value := mm[1], mm[2], mm[3]
			if slices.Contains(targetLabels, label) {
				continue
			}
			if !slices.Contains(labels, label) {
				errs = append(errs, fmt.Errorf("%s has no label %s", name, label))
				continue
			}
			set := allowed[name][label]
			if set == nil || strings.Contains(value, "$") || (op != "=" && op != "=~") {
				continue
			}
			for _, v := range strings.Split(value, "|") {
				if !slices.Contains(set, v) {
					errs = append(errs, fmt.Errorf("%s{%s%s%q}: %q is not a value of %s", name, label, op, value, v, label))
				}
			}
		}
	}
	for _, m := range counterFnRE.FindAllStringSubmatch(bare, -1) {
		if f := fams[m[2]]; f != nil && f.GetType() != dto.MetricType_COUNTER {
			errs = append(errs, fmt.Errorf("%s(%s): not a counter but a %v", m[1], m[2], f.GetType()))
		}
	}
	for _, m := range groupingRE.FindAllStringSubmatch(bare, -1) {
		for l := range strings.SplitSeq(m[2], ",") {
			l = strings.TrimSpace(l)
			if l == "" || slices.Contains(targetLabels, l) {
				continue
			}
			found := false
			for name := range used {
				if f := fams[name]; f != nil && slices.Contains(familyLabels(f), l) {
					found = true
				}
			}
			if !found {
				errs = append(errs, fmt.Errorf("%s (%s): no metric in the expression has label %s", m[1], m[2], l))
			}
		}
	}
	return errs
}

func familyLabels(f *dto.MetricFamily) []string {
	var out []string
	for _, m := range f.GetMetric() {
		for _, l := range m.GetLabel() {
			if !slices.Contains(out, l.GetName()) {
				out = append(out, l.GetName())
			}
		}
	}
	return out
}

// The checker itself must catch the mistakes it is there for.
func TestCheckExpr(t *testing.T) {
	fams := exportedFamilies(t)
	for _, tc := range []struct {
		expr string
		bad  bool
	}{
		{`up{job="relayd"} == 0`, false},
		{`sum by (reason) (rate(relayd_dropped_packets_total{reason="kernel"}[5m]))`, false},
		{`relayd_stun_dropped_total{reason=~"not_stun|bad_cookie"}`, false},
		{`relayd_channel_requests_total{instance=~"$instance", result="granted"}`, false},
		{`relayd_channels_activ`, true},                                   // misspelt metric
		{`relayd_dropped_packets_total{reason="kernal"}`, true},           // unknown value
		{`relayd_stun_dropped_total{reason=~"not_stun|malformed"}`, true}, // unknown alternative
		{`relayd_dropped_packets_total{cause="kernel"}`, true},            // unknown label
		{`rate(relayd_channels_active[5m])`, true},                        // rate of a gauge
		{`sum by (direction) (relayd_dropped_packets_total)`, true},       // grouping by a missing label
		{`sum(rate(relayd_relayed_bytes_total[5m])`, true},                // unbalanced
	} {
		errs := checkExpr(tc.expr, fams)
		if (len(errs) > 0) != tc.bad {
			t.Errorf("%s: errors %v, want bad=%v", tc.expr, errs, tc.bad)
		}
	}
}
