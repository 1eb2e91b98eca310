package usage

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// clock is a settable time source.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func at(s string) time.Time {
	t, err := time.ParseInLocation("2006-01-02 15:04", s, time.Local)
	if err != nil {
		panic(err)
	}
	return t
}

func TestCountsRollOverAndPersist(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{at("2026-11-30 23:50")}
	m := Open(dir, Totals{}, Options{Now: clk.now, FlushInterval: time.Minute})
	m.Sample(Totals{Bytes: 1000})
	m.Sample(Totals{Bytes: 1500})
	if c := m.Counts(); c.DayBytes != 1500 || c.MonthBytes != 1500 || c.Day != "2026-11-30" || c.Month != "2026-11" {
		t.Fatalf("counts %+v", c)
	}
	// Not written yet: the flush interval has not passed.
	if _, err := os.Stat(filepath.Join(dir, FileName)); !os.IsNotExist(err) {
		t.Fatalf("written before the interval: %v", err)
	}
	clk.t = clk.t.Add(time.Minute)
	m.Sample(Totals{Bytes: 2000}) // due now
	reopened := Open(dir, Totals{}, Options{Now: clk.now})
	if c := reopened.Counts(); c.DayBytes != 2000 || c.MonthBytes != 2000 {
		t.Fatalf("after a restart %+v, want the saved 2000", c)
	}

	// Midnight, and a new month: both restart from zero.
	clk.t = at("2026-12-01 00:05")
	m.Sample(Totals{Bytes: 2600})
	if c := m.Counts(); c.Day != "2026-12-01" || c.DayBytes != 600 || c.Month != "2026-12" || c.MonthBytes != 600 {
		t.Fatalf("after the month turned %+v", c)
	}
	// A new day within the month keeps the month.
	clk.t = at("2026-12-02 08:00")
	m.Sample(Totals{Bytes: 3000})
	if c := m.Counts(); c.DayBytes != 400 || c.MonthBytes != 1000 {
		t.Fatalf("next day %+v", c)
	}
	// A clock stepped back (no RTC, before NTP) resets nothing.
	clk.t = at("1970-01-01 00:00")
	m.Sample(Totals{Bytes: 3100})
	if c := m.Counts(); c.Day != "2026-12-02" || c.DayBytes != 500 || c.MonthBytes != 1100 {
		t.Fatalf("after the clock went back %+v", c)
	}
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	if c := Open(dir, Totals{}, Options{Now: clk.now}).Counts(); c.MonthBytes != 1100 {
		t.Fatalf("flushed %+v", c)
	}
}

func TestNewDataPlaneTotalCountsFromZero(t *testing.T) {
	m := Open(t.TempDir(), Totals{Bytes: 5000}, Options{})
	m.Sample(Totals{Bytes: 5100}) // 100 since open
	m.Sample(Totals{Bytes: 40})   // the total went down: a new data plane, 40 new bytes
	if c := m.Counts(); c.DayBytes != 140 {
		t.Fatalf("day %d, want 140", c.DayBytes)
	}
}

func TestDamagedFileIsSetAside(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	if err := os.WriteFile(path, []byte(`{"day": "yesterday", "day_bytes": 5}`), 0o640); err != nil {
		t.Fatal(err)
	}
	m := Open(dir, Totals{}, Options{})
	if c := m.Counts(); c.DayBytes != 0 || c.Day == "yesterday" {
		t.Fatalf("counts from a damaged file %+v", c)
	}
	if _, err := os.Stat(path + ".bad"); err != nil {
		t.Fatalf("damaged file not kept: %v", err)
	}
}

func TestFlushFailureIsRetried(t *testing.T) {
	dir := t.TempDir()
	m := Open(dir, Totals{}, Options{})
	m.Sample(Totals{Bytes: 10})
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o700)
	if os.Geteuid() != 0 { // root writes anyway
		if err := m.Flush(); err == nil {
			t.Fatal("flush into a read-only directory succeeded")
		}
	}
	os.Chmod(dir, 0o700)
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	if c := Open(dir, Totals{}, Options{}).Counts(); c.DayBytes != 10 {
		t.Fatalf("saved %+v", c)
	}
}

func TestQuota(t *testing.T) {
	clk := &clock{at("2026-11-22 12:00")}
	m := Open(t.TempDir(), Totals{}, Options{Now: clk.now})
	m.SetQuota(Quota{DailyBytes: 1e6, MonthlyBytes: 3e9})
	m.Sample(Totals{Bytes: 999_999})
	if err := m.Exhausted(); err != nil {
		t.Fatalf("under quota: %v", err)
	}
	m.Sample(Totals{Bytes: 1_000_000})
	err := m.Exhausted()
	if !errors.Is(err, ErrQuotaExhausted) || !strings.Contains(err.Error(), "daily quota of 1 MB") {
		t.Fatalf("daily quota: %v", err)
	}
	clk.t = at("2026-11-23 00:01") // a new day lifts the daily quota
	if err := m.Exhausted(); err != nil {
		t.Fatalf("next day: %v", err)
	}
	m.Sample(Totals{Bytes: 3_000_000_000})
	err = m.Exhausted()
	if !errors.Is(err, ErrQuotaExhausted) || !strings.Contains(err.Error(), "monthly quota of 3 GB is used up until 2026-12-01") {
		t.Fatalf("monthly quota: %v", err)
	}
	m.SetQuota(Quota{})
	if err := m.Exhausted(); err != nil {
		t.Fatalf("no quota: %v", err)
	}
}
