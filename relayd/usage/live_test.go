package usage

import (
	"fmt"
	"testing"
	"time"
)

// Each minute keeps the most calls live at once; the last hour is kept,
// older minutes and minutes before the start are left out.
func TestLiveKeepsTheLastHour(t *testing.T) {
	clk := &clock{at("2026-12-06 10:00")}
	l := NewLive(clk.now)
	if got := fmt.Sprint(l.Minutes()); got != "[]" {
		t.Fatalf("nothing recorded: %s", got)
	}
	l.Record(2)
	clk.t = clk.t.Add(30 * time.Second)
	l.Record(5)
	l.Record(1)
	clk.t = clk.t.Add(45 * time.Second) // minute 1
	l.Record(3)
	clk.t = clk.t.Add(2 * time.Minute) // minute 3; minute 2 had no record
	l.Record(0)
	if got, want := fmt.Sprint(l.Minutes()), "[{3 5} {2 3} {0 0}]"; got != want {
		t.Fatalf("minutes %s, want %s", got, want)
	}
	// An hour of records, one a minute: only the last 60 are kept, and
	// a slot reused for a later minute starts again from that minute's
	// count.
	for i := range 2 * LiveMinutes {
		clk.t = clk.t.Add(time.Minute)
		l.Record(100 + i)
	}
	got := l.Minutes()
	if len(got) != LiveMinutes || got[0] != (LiveMinute{Ago: LiveMinutes - 1, Max: 100 + LiveMinutes}) ||
		got[LiveMinutes-1] != (LiveMinute{Ago: 0, Max: 100 + 2*LiveMinutes - 1}) {
		t.Fatalf("after two hours: %d minutes, first %+v, last %+v", len(got), got[0], got[len(got)-1])
	}
	// Two silent hours later nothing recorded is recent.
	clk.t = clk.t.Add(2 * time.Hour)
	if got := l.Minutes(); len(got) != 0 {
		t.Fatalf("stale minutes %+v", got)
	}
}
