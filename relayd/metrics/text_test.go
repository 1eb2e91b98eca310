package metrics

import (
	"bytes"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The text format wants each family's HELP and TYPE once, before all of
// its samples, which come together; a parser merges or rejects anything
// else, so this is checked on the text itself.
func TestFamiliesWhole(t *testing.T) {
	src, _ := fakeSources()
	text := string(NewRegistry(src, "dev").AppendText(nil))
	seen := map[string]bool{}
	var current, typ string
	for line := range strings.Lines(text) {
		line = strings.TrimSuffix(line, "\n")
		if name, ok := strings.CutPrefix(line, "# HELP "); ok {
			name, _, _ = strings.Cut(name, " ")
			if seen[name] {
				t.Errorf("%s: a second HELP, the family is split", name)
			}
			seen[name], current, typ = true, name, ""
			continue
		}
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			name, tp, _ := strings.Cut(rest, " ")
			if name != current || typ != "" {
				t.Errorf("TYPE %s after HELP %s", name, current)
			}
			typ = tp
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		if typ == summaryType {
			name = strings.TrimSuffix(strings.TrimSuffix(name, "_sum"), "_count")
		}
		if name != current || typ == "" {
			t.Errorf("sample %q outside its family (current %s, type %q)", line, current, typ)
		}
	}
	if len(seen) < 50 {
		t.Errorf("%d families, want relayd's, go's and the process's", len(seen))
	}
}

// Label values and HELP text are escaped so that any string survives a
// round trip through a real parser.
func TestEscaping(t *testing.T) {
	f := family{name: "test_metric", help: `back\slash and` + "\nnewline", typ: gaugeType, labels: []string{"a", "b"}}
	value := "quote\" back\\slash\nnewline {x=\"y\"}"
	var w textWriter
	w.uint(&f, 3, value, "")
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(w.buf))
	if err != nil {
		t.Fatalf("%v\n%s", err, w.buf)
	}
	got := fams["test_metric"]
	if got.GetHelp() != f.help {
		t.Errorf("help %q, want %q", got.GetHelp(), f.help)
	}
	labels := got.GetMetric()[0].GetLabel()
	if labels[0].GetValue() != value || labels[1].GetValue() != "" {
		t.Errorf("labels %v, want %q and empty", labels, value)
	}
}

// Floats keep their special values and full precision; integers are
// written exactly, even past float64's 2^53.
func TestValues(t *testing.T) {
	f := family{name: "test_metric", help: "h", typ: gaugeType, labels: []string{"k"}}
	var w textWriter
	floats := map[string]float64{"nan": math.NaN(), "inf": math.Inf(1), "-inf": math.Inf(-1), "third": 1.0 / 3, "big": 1.5e300}
	for k, v := range floats {
		w.float(&f, v, k)
	}
	w.uint(&f, math.MaxUint64, "max")
	if !strings.Contains(string(w.buf), `test_metric{k="max"} 18446744073709551615`+"\n") {
		t.Errorf("max uint64 not written exactly:\n%s", w.buf)
	}
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(w.buf))
	if err != nil {
		t.Fatalf("%v\n%s", err, w.buf)
	}
	got := series(fams["test_metric"])
	for k, v := range floats {
		g := got["k="+k]
		if g != v && !(math.IsNaN(v) && math.IsNaN(g)) {
			t.Errorf("%s: %v, want %v", k, g, v)
		}
	}
}

// The handler serves the text format's content type, and at most
// maxScrapesInFlight scrapes at once: one more gets 503 at once instead
// of another response buffer.
func TestHandlerInFlightLimit(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	src := Sources{DataPlane: func() DataPlane {
		entered <- struct{}{}
		<-release
		return DataPlane{ActiveChannels: 3}
	}}
	srv := httptest.NewServer(Handler(NewRegistry(src, "dev")))
	defer srv.Close()

	get := func() (*http.Response, string) {
		resp, err := srv.Client().Get(srv.URL)
		if err != nil {
			t.Error(err)
			return nil, ""
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Error(err)
		}
		return resp, string(b)
	}
	var wg sync.WaitGroup
	for range maxScrapesInFlight {
		wg.Go(func() {
			resp, body := get()
			if resp == nil {
				return
			}
			if resp.StatusCode != http.StatusOK || !strings.Contains(body, "relayd_channels_active 3\n") {
				t.Errorf("held scrape: %s\n%s", resp.Status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
	for range maxScrapesInFlight {
		<-entered // every slot is held by a scrape inside its source
	}
	if resp, body := get(); resp != nil && resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("scrape over the limit: %s, want 503\n%s", resp.Status, body)
	}
	close(release)
	wg.Wait()
	// The slots are free again.
	go func() { <-entered }()
	if resp, _ := get(); resp != nil && resp.StatusCode != http.StatusOK {
		t.Errorf("scrape after the others ended: %s", resp.Status)
	}
}

// A scrape allocates little: the runtime's GC statistics and a handful of
// small values, not a message per metric as the protobuf-based registry
// did.
func TestAppendTextAllocations(t *testing.T) {
	src, _ := fakeSources()
	reg := NewRegistry(src, "dev")
	buf := reg.AppendText(nil)
	allocs := testing.AllocsPerRun(20, func() { buf = reg.AppendText(buf[:0]) })
	if allocs > 64 {
		t.Errorf("%v allocations per scrape, want at most 64", allocs)
	}
}
