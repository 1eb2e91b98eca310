package usage

import (
	"slices"
	"time"
)

// How much history is kept: the finished days and months before the
// current ones. The file stays a few kilobytes whatever happens.
const (
	HistoryDays   = 30
	HistoryMonths = 12
)

// Layouts of the period names (local calendar dates).
const (
	dayLayout   = "2006-01-02"
	monthLayout = "2006-01"
)

// Period is what was relayed in one day ("2006-01-02") or month
// ("2006-01").
type Period struct {
	Period string `json:"period"`
	Bytes  uint64 `json:"bytes"`
	Calls  uint64 `json:"calls"`
}

// History is every day of the last HistoryDays days and today, and every
// month of the last HistoryMonths months and this month, oldest first,
// with zeros for the periods nothing was relayed in (or relayd was off).
type History struct {
	Days   []Period `json:"days"`
	Months []Period `json:"months"`
}

// keptSince is the first period still kept before current: n days or
// months back, counted on the calendar (no time zone is involved, so a
// daylight-saving change cannot shift it).
func keptSince(current, layout string, n int) string {
	t, err := time.Parse(layout, current)
	if err != nil {
		return current
	}
	if layout == dayLayout {
		return t.AddDate(0, 0, -n).Format(layout)
	}
	return t.AddDate(0, -n, 0).Format(layout)
}

// prune keeps the periods from n before current up to, not including,
// current: sorted, one entry per period (the last one read wins), no
// invalid names. It returns a new slice.
func prune(ps []Period, current, layout string, n int) []Period {
	first := keptSince(current, layout, n)
	byName := map[string]Period{}
	for _, p := range ps {
		if _, err := time.Parse(layout, p.Period); err != nil || len(p.Period) != len(layout) {
			continue
		}
		if p.Period >= first && p.Period < current {
			byName[p.Period] = p
		}
	}
	out := make([]Period, 0, len(byName))
	for _, p := range byName {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Period) int {
		switch {
		case a.Period < b.Period:
			return -1
		case a.Period > b.Period:
			return 1
		}
		return 0
	})
	return out
}

// series lays the kept periods out as n+1 consecutive periods ending with
// current (whose figures are cur), zeros where nothing is kept.
func series(kept []Period, cur Period, layout string, n int) []Period {
	start, err := time.Parse(layout, keptSince(cur.Period, layout, n))
	if err != nil {
		return []Period{cur}
	}
	byName := make(map[string]Period, len(kept))
	for _, p := range kept {
		byName[p.Period] = p
	}
	out := make([]Period, 0, n+1)
	for i := range n {
		var name string
		if layout == dayLayout {
			name = start.AddDate(0, 0, i).Format(layout)
		} else {
			name = start.AddDate(0, i, 0).Format(layout)
		}
		p, ok := byName[name]
		if !ok {
			p = Period{Period: name}
		}
		out = append(out, p)
	}
	return append(out, cur)
}
