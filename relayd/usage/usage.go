// Package usage counts what the relay donated — bytes relayed and calls
// served, today and this month, with the last 30 days and 12 months of
// history — keeps the counts across restarts without wearing out a
// router's flash, says when a daily or monthly quota is used up, and
// keeps the number of live calls of the last hour in memory (live.go).
//
// The relay's byte and call totals only grow while relayd runs; the meter
// samples them and adds each difference to the current day and month
// (local time: a donor's ISP counts in the device's time zone). A day or
// month that ends moves into the history. The counts and the history are
// written to one small file (file.go) with an atomic replace, only when
// they changed, at most once per flush interval (5 min by default), and at
// Close: a SIGKILL or power cut loses at most one interval of counting.
package usage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/jnrelay/jnrelay/internal/atomicfile"
)

// FileName is the state file in the state directory.
const FileName = "usage.json"

// DefaultFlushInterval bounds how often the file is written (and so what
// a SIGKILL or a power cut can lose).
const DefaultFlushInterval = 5 * time.Minute

// Counts is what was relayed in the current day and month.
type Counts struct {
	Day        string `json:"day"` // 2006-01-02, local time
	DayBytes   uint64 `json:"day_bytes"`
	DayCalls   uint64 `json:"day_calls"`
	Month      string `json:"month"` // 2006-01
	MonthBytes uint64 `json:"month_bytes"`
	MonthCalls uint64 `json:"month_calls"`
}

// Totals are the relay's running totals since start, which the meter
// samples: bytes relayed (both directions) and calls served (see
// docs/configuration.md: channels and TURN allocations that relayed at
// least one packet each way).
type Totals struct {
	Bytes, Calls uint64
}

// Quota is a limit in bytes per day and per month (0 = none).
type Quota struct {
	DailyBytes, MonthlyBytes uint64
}

// ErrQuotaExhausted wraps the reason new channels are refused.
var ErrQuotaExhausted = errors.New("data quota used up")

// Meter counts and persists usage. Its methods are safe for concurrent
// use.
type Meter struct {
	path  string
	log   *slog.Logger
	now   func() time.Time
	every time.Duration

	mu        sync.Mutex
	c         Counts
	days      []Period  // finished days kept (prune: within HistoryDays, oldest first)
	months    []Period  // finished months kept (within HistoryMonths)
	lastTotal Totals    // the totals at the last sample
	dirty     bool      // counts changed since the last write
	written   time.Time // last write
	quota     Quota
	refusing  bool // a quota was used up at the last sample (for logging changes)
}

// Options tune a Meter; zero values take the defaults.
type Options struct {
	Logger        *slog.Logger
	FlushInterval time.Duration
	Now           func() time.Time // for tests
}

// Open loads the counts kept in dir ("" = count in memory only; none yet
// is fine; a damaged file is
// logged and counting starts again from zero, keeping the bad file as
// usage.json.bad). total is the relay's totals now (usually zero at
// start), from which later samples count.
func Open(dir string, total Totals, opt Options) *Meter {
	m := &Meter{log: opt.Logger, now: opt.Now, every: opt.FlushInterval, lastTotal: total}
	if dir != "" {
		m.path = filepath.Join(dir, FileName)
	}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if m.now == nil {
		m.now = time.Now
	}
	if m.every <= 0 {
		m.every = DefaultFlushInterval
	}
	if m.path == "" {
		m.written = m.now()
		m.rollLocked(m.now())
		return m
	}
	atomicfile.RemoveTemps(m.path)
	data, err := os.ReadFile(m.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		m.log.Error("usage counts unreadable; counting from zero", "file", m.path, "err", err)
	default:
		f, err := decodeFile(data)
		if err != nil {
			m.log.Error("usage counts damaged; counting from zero (the file is kept as "+FileName+".bad)", "file", m.path, "err", err)
			_ = os.Rename(m.path, m.path+".bad")
			break
		}
		if f.Version > FileVersion {
			m.log.Warn("usage counts written by a later relayd: keeping what this one knows", "file", m.path, "version", f.Version)
		}
		m.c = f.Counts
		m.days = prune(f.Days, m.c.Day, dayLayout, HistoryDays)
		m.months = prune(f.Months, m.c.Month, monthLayout, HistoryMonths)
		// Written again in this version at the next save, not now: a
		// start writes nothing more often than before.
	}
	m.written = m.now()
	m.rollLocked(m.now())
	return m
}

func validCounts(c Counts) bool {
	if _, err := time.Parse(dayLayout, c.Day); err != nil {
		return false
	}
	_, err := time.Parse(monthLayout, c.Month)
	return err == nil
}

// rollLocked starts a new day or month when the clock has moved into one;
// the one that ended goes into the history if anything was relayed in
// it. A clock stepped backwards (a router without an RTC before NTP) does
// not reset anything: counts only roll forward to a later period.
func (m *Meter) rollLocked(now time.Time) {
	day, month := now.Format(dayLayout), now.Format(monthLayout)
	if day > m.c.Day {
		if m.c.Day != "" {
			m.log.Info("new day: daily usage starts again", "yesterday", m.c.Day, "bytes", m.c.DayBytes, "calls", m.c.DayCalls)
			if m.c.DayBytes > 0 || m.c.DayCalls > 0 {
				m.days = append(m.days, Period{Period: m.c.Day, Bytes: m.c.DayBytes, Calls: m.c.DayCalls})
			}
		}
		m.c.Day, m.c.DayBytes, m.c.DayCalls = day, 0, 0
		m.days = prune(m.days, day, dayLayout, HistoryDays)
		m.dirty = true
	}
	if month > m.c.Month {
		if m.c.Month != "" {
			m.log.Info("new month: monthly usage starts again", "last_month", m.c.Month, "bytes", m.c.MonthBytes, "calls", m.c.MonthCalls)
			if m.c.MonthBytes > 0 || m.c.MonthCalls > 0 {
				m.months = append(m.months, Period{Period: m.c.Month, Bytes: m.c.MonthBytes, Calls: m.c.MonthCalls})
			}
		}
		m.c.Month, m.c.MonthBytes, m.c.MonthCalls = month, 0, 0
		m.months = prune(m.months, month, monthLayout, HistoryMonths)
		m.dirty = true
	}
}

// since is what a running total grew by from last; a total lower than
// the last one (a new data plane or TURN server) counts from zero.
func since(total, last uint64) uint64 {
	if total < last {
		return total
	}
	return total - last
}

// Sample adds what the relay relayed and served since the last sample
// (total is its running totals) and writes the file if it is due.
func (m *Meter) Sample(total Totals) {
	m.mu.Lock()
	now := m.now()
	m.rollLocked(now)
	if d := since(total.Bytes, m.lastTotal.Bytes); d > 0 {
		m.c.DayBytes += d
		m.c.MonthBytes += d
		m.dirty = true
	}
	if d := since(total.Calls, m.lastTotal.Calls); d > 0 {
		m.c.DayCalls += d
		m.c.MonthCalls += d
		m.dirty = true
	}
	m.lastTotal = total
	due := m.dirty && now.Sub(m.written) >= m.every
	exhausted := m.exhaustedLocked(now)
	if (exhausted != nil) != m.refusing {
		m.refusing = exhausted != nil
		if exhausted != nil {
			m.log.Warn("quota used up: new channels are refused, calls in progress go on", "reason", exhausted.Error(),
				"day_bytes", m.c.DayBytes, "month_bytes", m.c.MonthBytes)
		} else {
			m.log.Info("quota has room again: taking new channels")
		}
	}
	m.mu.Unlock()
	if due {
		if err := m.Flush(); err != nil {
			m.log.Warn("usage counts not saved; retrying at the next interval", "err", err)
		}
	}
}

// Flush writes the counts now if they changed since the last write.
func (m *Meter) Flush() error {
	m.mu.Lock()
	if !m.dirty || m.path == "" {
		m.mu.Unlock()
		return nil
	}
	f := file{Version: FileVersion, Counts: m.c, Days: slices.Clone(m.days), Months: slices.Clone(m.months)}
	m.dirty = false
	m.written = m.now()
	m.mu.Unlock()
	data, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(m.path, append(data, '\n'), 0o640, -1, -1); err != nil {
		m.mu.Lock()
		m.dirty = true // try again next time
		m.mu.Unlock()
		return fmt.Errorf("save usage counts: %w", err)
	}
	m.log.Debug("usage counts saved", "day_bytes", f.DayBytes, "month_bytes", f.MonthBytes)
	return nil
}

// Counts returns the current counts.
func (m *Meter) Counts() Counts {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(m.now())
	return m.c
}

// History returns the last HistoryDays days and today, and the last
// HistoryMonths months and this month, oldest first.
func (m *Meter) History() History {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rollLocked(m.now())
	return History{
		Days:   series(m.days, Period{Period: m.c.Day, Bytes: m.c.DayBytes, Calls: m.c.DayCalls}, dayLayout, HistoryDays),
		Months: series(m.months, Period{Period: m.c.Month, Bytes: m.c.MonthBytes, Calls: m.c.MonthCalls}, monthLayout, HistoryMonths),
	}
}

// SetFlushInterval changes how often, at most, the counts are written
// (0 = DefaultFlushInterval).
func (m *Meter) SetFlushInterval(d time.Duration) {
	if d <= 0 {
		d = DefaultFlushInterval
	}
	m.mu.Lock()
	m.every = d
	m.mu.Unlock()
}

// SetQuota sets the limits Exhausted checks.
func (m *Meter) SetQuota(q Quota) {
	m.mu.Lock()
	m.quota = q
	m.mu.Unlock()
}

// Quota returns the limits in force.
func (m *Meter) Quota() Quota {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.quota
}

// Exhausted returns an error wrapping ErrQuotaExhausted, saying which
// quota and until when, if the daily or monthly quota is used up; nil
// otherwise. Calls in progress are not cut: this only refuses new ones.
func (m *Meter) Exhausted() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.exhaustedLocked(m.now())
}

func (m *Meter) exhaustedLocked(now time.Time) error {
	m.rollLocked(now)
	if q := m.quota.MonthlyBytes; q > 0 && m.c.MonthBytes >= q {
		next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, now.Location())
		return fmt.Errorf("%w: the monthly quota of %s is used up until %s", ErrQuotaExhausted, humanBytes(q), next.Format("2006-01-02"))
	}
	if q := m.quota.DailyBytes; q > 0 && m.c.DayBytes >= q {
		return fmt.Errorf("%w: the daily quota of %s is used up until midnight", ErrQuotaExhausted, humanBytes(q))
	}
	return nil
}

func humanBytes(n uint64) string {
	switch {
	case n >= 1e9 && n%1e9 == 0:
		return fmt.Sprintf("%d GB", n/1e9)
	case n >= 1e6 && n%1e6 == 0:
		return fmt.Sprintf("%d MB", n/1e6)
	}
	return fmt.Sprintf("%d bytes", n)
}
