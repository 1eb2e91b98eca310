package metrics

import (
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"time"
)

// runtimeGauge is a go_* metric that is the sum of runtime/metrics values.
// runtime/metrics is read without stopping the world, unlike
// runtime.ReadMemStats; the go_memstats_* names keep MemStats' meaning,
// which each is the sum of the listed runtime/metrics classes for.
type runtimeGauge struct {
	family
	sum []string // runtime/metrics names, all uint64
}

func newRuntimeGauges() []runtimeGauge {
	const (
		heapObjects  = "/memory/classes/heap/objects:bytes"
		heapUnused   = "/memory/classes/heap/unused:bytes"
		heapReleased = "/memory/classes/heap/released:bytes"
		heapFree     = "/memory/classes/heap/free:bytes"
		stacks       = "/memory/classes/heap/stacks:bytes"
		tinyAllocs   = "/gc/heap/tiny/allocs:objects"
	)
	g := func(typ, name, help string, sum ...string) runtimeGauge {
		return runtimeGauge{family{name: name, help: help, typ: typ}, sum}
	}
	return []runtimeGauge{
		g(gaugeType, "go_gc_gogc_percent", "Heap size target percentage (GOGC), otherwise 100.", "/gc/gogc:percent"),
		// math.MaxInt64 when no limit is set.
		g(gaugeType, "go_gc_gomemlimit_bytes", "Go runtime memory limit (GOMEMLIMIT), otherwise math.MaxInt64.", "/gc/gomemlimit:bytes"),
		g(gaugeType, "go_goroutines", "Number of goroutines that currently exist.", "/sched/goroutines:goroutines"),
		g(gaugeType, "go_memstats_alloc_bytes", "Number of heap bytes allocated and currently in use.", heapObjects),
		g(counterType, "go_memstats_alloc_bytes_total", "Total number of heap bytes allocated, even if freed.", "/gc/heap/allocs:bytes"),
		g(gaugeType, "go_memstats_buck_hash_sys_bytes", "Number of bytes used by the profiling bucket hash table.", "/memory/classes/profiling/buckets:bytes"),
		// MemStats counts tiny allocations in both mallocs and frees.
		g(counterType, "go_memstats_frees_total", "Total number of heap objects freed.", "/gc/heap/frees:objects", tinyAllocs),
		g(gaugeType, "go_memstats_gc_sys_bytes", "Number of bytes used for garbage collection system metadata.", "/memory/classes/metadata/other:bytes"),
		g(gaugeType, "go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use.", heapObjects),
		g(gaugeType, "go_memstats_heap_idle_bytes", "Number of heap bytes waiting to be used.", heapReleased, heapFree),
		g(gaugeType, "go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use.", heapObjects, heapUnused),
		g(gaugeType, "go_memstats_heap_objects", "Number of allocated heap objects.", "/gc/heap/objects:objects"),
		g(gaugeType, "go_memstats_heap_released_bytes", "Number of heap bytes released to the OS.", heapReleased),
		g(gaugeType, "go_memstats_heap_sys_bytes", "Number of heap bytes obtained from the system.", heapObjects, heapUnused, heapReleased, heapFree),
		g(counterType, "go_memstats_mallocs_total", "Total number of heap objects allocated.", "/gc/heap/allocs:objects", tinyAllocs),
		g(gaugeType, "go_memstats_mcache_inuse_bytes", "Number of bytes in use by mcache structures.", "/memory/classes/metadata/mcache/inuse:bytes"),
		g(gaugeType, "go_memstats_mcache_sys_bytes", "Number of bytes used for mcache structures obtained from the system.",
			"/memory/classes/metadata/mcache/inuse:bytes", "/memory/classes/metadata/mcache/free:bytes"),
		g(gaugeType, "go_memstats_mspan_inuse_bytes", "Number of bytes in use by mspan structures.", "/memory/classes/metadata/mspan/inuse:bytes"),
		g(gaugeType, "go_memstats_mspan_sys_bytes", "Number of bytes used for mspan structures obtained from the system.",
			"/memory/classes/metadata/mspan/inuse:bytes", "/memory/classes/metadata/mspan/free:bytes"),
		g(gaugeType, "go_memstats_next_gc_bytes", "Heap size at which the next garbage collection takes place.", "/gc/heap/goal:bytes"),
		g(gaugeType, "go_memstats_other_sys_bytes", "Number of bytes used for other system allocations.", "/memory/classes/other:bytes"),
		g(gaugeType, "go_memstats_stack_inuse_bytes", "Number of bytes in use by the stack allocator.", stacks),
		g(gaugeType, "go_memstats_stack_sys_bytes", "Number of bytes obtained from the system for the stack allocator.", stacks, "/memory/classes/os-stacks:bytes"),
		g(gaugeType, "go_memstats_sys_bytes", "Number of bytes obtained from the system.", "/memory/classes/total:bytes"),
		g(gaugeType, "go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting.", "/sched/gomaxprocs:threads"),
	}
}

// goRuntime writes the go_* metrics.
type goRuntime struct {
	gauges               []runtimeGauge
	info, threads        family
	gcDuration, gcLastGC family
}

func newGoRuntime() *goRuntime {
	return &goRuntime{
		gauges:  newRuntimeGauges(),
		info:    family{name: "go_info", help: "Information about the Go environment.", typ: gaugeType, labels: []string{"version"}},
		threads: family{name: "go_threads", help: "Number of OS threads created.", typ: gaugeType},
		gcDuration: family{name: "go_gc_duration_seconds", typ: summaryType, labels: []string{"quantile"},
			help: "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles."},
		gcLastGC: family{name: "go_memstats_last_gc_time_seconds", help: "Number of seconds since 1970 of the last garbage collection.", typ: gaugeType},
	}
}

// gcPauseQuantiles are the quantiles of go_gc_duration_seconds: minimum,
// quartiles, maximum (what debug.ReadGCStats computes for five).
var gcPauseQuantiles = [...]string{"0", "0.25", "0.5", "0.75", "1"}

func (g *goRuntime) write(w *textWriter) {
	var samples []rtmetrics.Sample
	for _, m := range g.gauges {
		for _, name := range m.sum {
			samples = append(samples, rtmetrics.Sample{Name: name})
		}
	}
	rtmetrics.Read(samples)
	for i := range g.gauges {
		m := &g.gauges[i]
		var v uint64
		for range m.sum {
			// A name this Go does not know reads as KindBad: counted 0.
			if samples[0].Value.Kind() == rtmetrics.KindUint64 {
				v += samples[0].Value.Uint64()
			}
			samples = samples[1:]
		}
		w.uint(&m.family, v)
	}

	w.uint(&g.info, 1, runtime.Version())
	threads, _ := runtime.ThreadCreateProfile(nil)
	w.uint(&g.threads, uint64(max(threads, 0)))

	stats := debug.GCStats{PauseQuantiles: make([]time.Duration, len(gcPauseQuantiles))}
	debug.ReadGCStats(&stats)
	for i, q := range gcPauseQuantiles {
		w.float(&g.gcDuration, stats.PauseQuantiles[i].Seconds(), q)
	}
	w.floatSuffix(&g.gcDuration, "_sum", stats.PauseTotal.Seconds())
	w.floatSuffix(&g.gcDuration, "_count", float64(stats.NumGC))
	w.float(&g.gcLastGC, float64(stats.LastGC.UnixNano())/1e9)
}
