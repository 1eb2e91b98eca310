package usage

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// periodsOf finds the named periods of a series, failing on a gap, a
// repeat or a wrong length.
func periodsOf(t *testing.T, what string, ps []Period, n int) map[string]Period {
	t.Helper()
	if len(ps) != n {
		t.Fatalf("%s: %d periods, want %d: %+v", what, len(ps), n, ps)
	}
	out := map[string]Period{}
	for i, p := range ps {
		if i > 0 && p.Period <= ps[i-1].Period {
			t.Fatalf("%s: %s after %s", what, p.Period, ps[i-1].Period)
		}
		out[p.Period] = p
	}
	return out
}

// Days, months and a year end: each finished period moves into the
// history with its bytes and calls, the series keep 31 days and 13
// months, and what falls out of the window is forgotten.
func TestHistoryRollsOverDaysMonthsAndYears(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{at("2026-12-30 22:00")}
	m := Open(dir, Totals{}, Options{Now: clk.now, FlushInterval: time.Minute})
	total := Totals{}
	relay := func(bytes, calls uint64) {
		total.Bytes += bytes
		total.Calls += calls
		m.Sample(total)
	}
	relay(100, 1)
	clk.t = at("2026-12-31 23:59")
	relay(200, 2)
	clk.t = at("2027-01-01 00:00") // a new day, month and year at once
	relay(400, 4)
	h := m.History()
	days := periodsOf(t, "days", h.Days, HistoryDays+1)
	if h.Days[0].Period != "2026-12-02" || h.Days[HistoryDays].Period != "2027-01-01" {
		t.Fatalf("days run %s..%s", h.Days[0].Period, h.Days[HistoryDays].Period)
	}
	for day, want := range map[string]Period{
		"2026-12-29": {"2026-12-29", 0, 0}, "2026-12-30": {"2026-12-30", 100, 1},
		"2026-12-31": {"2026-12-31", 200, 2}, "2027-01-01": {"2027-01-01", 400, 4},
	} {
		if days[day] != want {
			t.Errorf("day %s: %+v, want %+v", day, days[day], want)
		}
	}
	months := periodsOf(t, "months", h.Months, HistoryMonths+1)
	if h.Months[0].Period != "2026-01" || months["2026-12"] != (Period{"2026-12", 300, 3}) || months["2027-01"] != (Period{"2027-01", 400, 4}) {
		t.Errorf("months %+v", h.Months)
	}
	if c := m.Counts(); c.DayCalls != 4 || c.MonthCalls != 4 || c.MonthBytes != 400 {
		t.Errorf("counts %+v", c)
	}

	// Saved and read back, the history is the same.
	clk.t = clk.t.Add(time.Minute)
	relay(0, 0)
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	if got := Open(dir, Totals{}, Options{Now: clk.now}).History(); fmt.Sprint(got) != fmt.Sprint(m.History()) {
		t.Fatalf("read back %+v\nwant %+v", got, m.History())
	}

	// 30 days later 2026-12-31 is the oldest day kept; a day later it is
	// gone. Twelve months later December 2026 is the oldest month kept.
	clk.t = at("2027-01-30 12:00")
	if h := m.History(); h.Days[0] != (Period{"2026-12-31", 200, 2}) {
		t.Errorf("30 days on, the oldest day is %+v, want 2026-12-31 with 200 bytes", h.Days[0])
	}
	clk.t = at("2027-01-31 12:00")
	h = m.History()
	if days := periodsOf(t, "days", h.Days, HistoryDays+1); days["2026-12-31"].Bytes != 0 {
		t.Errorf("31 days on, 2026-12-31 is still shown: %+v", days["2026-12-31"])
	}
	if h.Days[0] != (Period{"2027-01-01", 400, 4}) {
		t.Errorf("30 days on, the oldest day is %+v, want 2027-01-01 with 400 bytes", h.Days[0])
	}
	if len(m.days) != 1 || m.days[0].Period != "2027-01-01" {
		t.Errorf("kept days %+v, want only 2027-01-01", m.days)
	}
	clk.t = at("2027-12-01 00:00")
	h = m.History()
	if h.Months[0] != (Period{"2026-12", 300, 3}) || h.Months[1] != (Period{"2027-01", 400, 4}) || h.Months[HistoryMonths].Period != "2027-12" {
		t.Errorf("twelve months on: %+v", h.Months)
	}
	clk.t = at("2028-01-01 00:00")
	if h := m.History(); h.Months[0] != (Period{"2027-01", 400, 4}) || len(m.months) != 1 {
		t.Errorf("a year and a month on: %+v (kept %+v)", h.Months, m.months)
	}
}

// A relay that was off for days starts with the day it was last counting
// in the history, and the days it was off at zero.
func TestHistoryAcrossDaysOff(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{at("2026-02-27 10:00")}
	m := Open(dir, Totals{}, Options{Now: clk.now})
	m.Sample(Totals{Bytes: 5000, Calls: 3})
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	clk.t = at("2026-03-03 09:00") // February has 28 days in 2026
	h := Open(dir, Totals{}, Options{Now: clk.now}).History()
	days := periodsOf(t, "days", h.Days, HistoryDays+1)
	if days["2026-02-27"] != (Period{"2026-02-27", 5000, 3}) || days["2026-02-28"].Bytes != 0 || days["2026-03-02"].Bytes != 0 ||
		h.Days[0].Period != "2026-02-01" || days["2026-03-03"] != (Period{Period: "2026-03-03"}) {
		t.Errorf("days %+v", h.Days)
	}
	if months := periodsOf(t, "months", h.Months, HistoryMonths+1); months["2026-02"] != (Period{"2026-02", 5000, 3}) {
		t.Errorf("months %+v", h.Months)
	}
}

// Calls count like bytes: only what the total grew by, from zero again
// when the total starts again (a new TURN server).
func TestCallsCountedFromTotals(t *testing.T) {
	m := Open("", Totals{Calls: 7}, Options{})
	m.Sample(Totals{Calls: 9})
	m.Sample(Totals{Calls: 9})
	m.Sample(Totals{Calls: 1})
	if c := m.Counts(); c.DayCalls != 3 || c.MonthCalls != 3 {
		t.Fatalf("calls %+v, want 3", c)
	}
}

// A version 1 file (the counts alone, no version key) loads: its counts
// go on, a past day and month move into the history, and the next save
// writes version 2, which keeps the keys version 1 had.
func TestVersion1FileMigrates(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, FileName)
	v1 := `{"day":"2026-11-30","day_bytes":1500,"month":"2026-11","month_bytes":90000}` + "\n"
	if err := os.WriteFile(path, []byte(v1), 0o640); err != nil {
		t.Fatal(err)
	}
	clk := &clock{at("2026-11-30 20:00")}
	m := Open(dir, Totals{}, Options{Now: clk.now})
	if c := m.Counts(); c != (Counts{Day: "2026-11-30", DayBytes: 1500, Month: "2026-11", MonthBytes: 90000}) {
		t.Fatalf("counts from version 1 %+v", c)
	}
	if raw, _ := os.ReadFile(path); string(raw) != v1 {
		t.Fatalf("opening rewrote the file: %s", raw)
	}
	clk.t = at("2026-12-01 08:00")
	m.Sample(Totals{Bytes: 10, Calls: 1})
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"version": 2.0, "day": "2026-12-01", "day_bytes": 10.0, "month": "2026-12", "month_bytes": 10.0, "day_calls": 1.0} {
		if doc[k] != want {
			t.Errorf("saved %s = %v, want %v (file %s)", k, doc[k], want, raw)
		}
	}
	if !strings.Contains(string(raw), `"days":[{"period":"2026-11-30","bytes":1500,"calls":0}]`) ||
		!strings.Contains(string(raw), `"months":[{"period":"2026-11","bytes":90000,"calls":0}]`) {
		t.Errorf("history not saved: %s", raw)
	}
	// What a version 1 relayd reads of it: its own keys.
	var old struct {
		Day        string `json:"day"`
		DayBytes   uint64 `json:"day_bytes"`
		Month      string `json:"month"`
		MonthBytes uint64 `json:"month_bytes"`
	}
	if err := json.Unmarshal(raw, &old); err != nil || old.DayBytes != 10 || old.Month != "2026-12" {
		t.Errorf("a version 1 reader gets %+v %v", old, err)
	}
}

// The history read from the file is bounded whatever it holds: periods
// outside the window, duplicates, invalid names and thousands of entries
// are dropped; a later version's unknown keys are ignored.
func TestHistoryFromFileBounded(t *testing.T) {
	dir := t.TempDir()
	f := map[string]any{"version": 3, "day": "2026-06-15", "day_bytes": 1, "month": "2026-06", "month_bytes": 1, "later_key": true}
	var days, months []Period
	for i := range 5000 {
		days = append(days, Period{Period: time.Date(2020, 1, 1+i, 0, 0, 0, 0, time.UTC).Format(dayLayout), Bytes: 1})
	}
	days = append(days, Period{Period: "2026-06-14", Bytes: 7}, Period{Period: "2026-06-14", Bytes: 8}, Period{Period: "junk", Bytes: 9},
		Period{Period: "2026-6-13", Bytes: 9}, Period{Period: "2026-06-15", Bytes: 9}, Period{Period: "2027-01-01", Bytes: 9})
	months = append(months, Period{Period: "2025-06", Bytes: 1}, Period{Period: "2025-05", Bytes: 9}, Period{Period: "2026-06", Bytes: 9}, Period{Period: "2026-13", Bytes: 9})
	f["days"], f["months"] = days, months
	raw, _ := json.Marshal(f)
	if err := os.WriteFile(filepath.Join(dir, FileName), raw, 0o640); err != nil {
		t.Fatal(err)
	}
	m := Open(dir, Totals{}, Options{Now: (&clock{at("2026-06-15 12:00")}).now})
	if len(m.days) != HistoryDays || m.days[0].Period != "2026-05-16" || m.days[HistoryDays-1] != (Period{"2026-06-14", 8, 0}) {
		t.Errorf("kept %d days: first %+v, last %+v", len(m.days), m.days[0], m.days[len(m.days)-1])
	}
	if len(m.months) != 1 || m.months[0].Period != "2025-06" {
		t.Errorf("kept months %+v", m.months)
	}
	if c := m.Counts(); c.DayBytes != 1 {
		t.Errorf("counts %+v", c)
	}
	if err := m.Flush(); err != nil { // nothing changed: nothing written
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, FileName)); string(got) != string(raw) {
		t.Error("a file read without change was written again")
	}
}

// The whole file stays small: a full history of big numbers.
func TestFileSizeBounded(t *testing.T) {
	dir := t.TempDir()
	clk := &clock{at("2026-01-01 12:00")}
	m := Open(dir, Totals{}, Options{Now: clk.now})
	total := Totals{}
	for range 800 { // more than two years, every day
		total.Bytes += 1e15
		total.Calls += 1e9
		m.Sample(total)
		clk.t = clk.t.AddDate(0, 0, 1)
	}
	m.Sample(total)
	if err := m.Flush(); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if len(m.days) != HistoryDays || len(m.months) != HistoryMonths || fi.Size() > 4096 {
		t.Fatalf("%d days, %d months, file %d bytes", len(m.days), len(m.months), fi.Size())
	}
}
