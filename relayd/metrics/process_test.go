package metrics

import (
	"bytes"
	"os"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// unlabelled parses one scrape of reg and returns the value of each
// metric without labels.
func unlabelled(t *testing.T, reg *Registry) map[string]float64 {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(reg.AppendText(nil)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		if v, ok := series(f)[""]; ok {
			out[name] = v
		}
		if f.GetType() == dto.MetricType_SUMMARY {
			out[name+"_count"] = float64(f.GetMetric()[0].GetSummary().GetSampleCount())
		}
	}
	return out
}

// The process metrics are this process': descriptors opened show up in
// process_open_fds, the limit is the soft RLIMIT_NOFILE, and the start
// time is the test binary's.
func TestProcessMetrics(t *testing.T) {
	reg := NewRegistry(Sources{}, "dev")
	before := unlabelled(t, reg)
	var files []*os.File
	for range 5 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	after := unlabelled(t, reg)
	for _, f := range files {
		f.Close()
	}
	if d := after["process_open_fds"] - before["process_open_fds"]; d != 5 {
		t.Errorf("process_open_fds went from %v to %v with 5 files opened", before["process_open_fds"], after["process_open_fds"])
	}
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if got := after["process_max_fds"]; got != float64(lim.Cur) {
		t.Errorf("process_max_fds = %v, want %d", got, lim.Cur)
	}
	switch rss := after["process_resident_memory_bytes"]; {
	case rss == 0 && os.Getenv("JNRELAY_QEMU_USER") == "1":
		// qemu-user writes its own /proc/self/stat, with zero sizes.
		t.Log("qemu-user: /proc/self/stat has no memory sizes; resident memory not checked")
	case rss < 1<<20 || rss > after["process_virtual_memory_bytes"]:
		t.Errorf("process_resident_memory_bytes = %v (virtual %v)", rss, after["process_virtual_memory_bytes"])
	}
	start := time.Unix(0, int64(after["process_start_time_seconds"]*1e9))
	if age := time.Since(start); age < 0 || age > 10*time.Minute {
		t.Errorf("process_start_time_seconds says the test started %v ago", age)
	}
	if after["process_cpu_seconds_total"] < before["process_cpu_seconds_total"] {
		t.Errorf("process_cpu_seconds_total went back: %v then %v", before["process_cpu_seconds_total"], after["process_cpu_seconds_total"])
	}
}

// The go_* metrics read the runtime: the memory limit GOMEMLIMIT sets,
// garbage collections as they happen.
func TestGoRuntimeMetrics(t *testing.T) {
	reg := NewRegistry(Sources{}, "dev")
	const limit = 48 << 20
	old := debug.SetMemoryLimit(limit)
	defer debug.SetMemoryLimit(old)
	before := unlabelled(t, reg)
	runtime.GC()
	after := unlabelled(t, reg)
	if got := after["go_gc_gomemlimit_bytes"]; got != limit {
		t.Errorf("go_gc_gomemlimit_bytes = %v, want %d", got, limit)
	}
	if after["go_gc_duration_seconds_count"] <= before["go_gc_duration_seconds_count"] {
		t.Errorf("go_gc_duration_seconds_count %v then %v across a GC", before["go_gc_duration_seconds_count"], after["go_gc_duration_seconds_count"])
	}
	if after["go_memstats_last_gc_time_seconds"] < float64(time.Now().Add(-time.Minute).Unix()) {
		t.Errorf("go_memstats_last_gc_time_seconds = %v, just after a GC", after["go_memstats_last_gc_time_seconds"])
	}
	if after["go_goroutines"] < 1 || after["go_sched_gomaxprocs_threads"] != float64(runtime.GOMAXPROCS(0)) {
		t.Errorf("go_goroutines %v, go_sched_gomaxprocs_threads %v", after["go_goroutines"], after["go_sched_gomaxprocs_threads"])
	}
	heap := after["go_memstats_heap_inuse_bytes"]
	if heap <= 0 || heap > after["go_memstats_heap_sys_bytes"] || after["go_memstats_heap_sys_bytes"] > after["go_memstats_sys_bytes"] {
		t.Errorf("heap in use %v, heap %v, sys %v", heap, after["go_memstats_heap_sys_bytes"], after["go_memstats_sys_bytes"])
	}
	// Every runtime/metrics name is one this Go knows: an unknown one
	// would read as 0 for ever.
	for _, g := range newRuntimeGauges() {
		for _, name := range g.sum {
			if !knownRuntimeMetric(name) {
				t.Errorf("%s: runtime/metrics has no %s", g.name, name)
			}
		}
	}
}

// The /proc/<pid>/stat parser counts fields from the last ')', so a
// command name with spaces and parentheses does not shift them.
func TestParseStat(t *testing.T) {
	// Fields 3 to 24: state, 10 ignored, utime stime, 6 ignored,
	// starttime vsize rss.
	line := "42 (a) b (c) R 1 2 3 4 5 6 7 8 9 10 250 150 0 0 20 0 1 0 9000 123456 789 18446744073709551615 1\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{utime: 250, stime: 150, startTicks: 9000, vsize: 123456, rssPages: 789}
	if st != want {
		t.Errorf("got %+v, want %+v", st, want)
	}
	for _, bad := range []string{"42 (a", "42 (a) R 1 2", "42 (a) R 1 2 3 4 5 6 7 8 9 10 x 150 0 0 20 0 1 0 9000 123456 789"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
}

func knownRuntimeMetric(name string) bool {
	for _, d := range rtmetrics.All() {
		if d.Name == name {
			return true
		}
	}
	return false
}

// Counter types survive: rate() in the dashboard needs them.
func TestRuntimeTypes(t *testing.T) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(NewRegistry(Sources{}, "dev").AppendText(nil)))
	if err != nil {
		t.Fatal(err)
	}
	for name, typ := range map[string]dto.MetricType{
		"process_cpu_seconds_total":     dto.MetricType_COUNTER,
		"go_memstats_alloc_bytes_total": dto.MetricType_COUNTER,
		"go_gc_duration_seconds":        dto.MetricType_SUMMARY,
		"process_open_fds":              dto.MetricType_GAUGE,
		"go_gc_gomemlimit_bytes":        dto.MetricType_GAUGE,
	} {
		if got := fams[name].GetType(); got != typ {
			t.Errorf("%s: %v, want %v", name, got, typ)
		}
	}
}
