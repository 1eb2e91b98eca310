package usage

import (
	"encoding/json"
	"fmt"
)

// FileVersion is the version of usage.json this relayd writes.
//
//   - 1 (no "version" key): day, day_bytes, month, month_bytes.
//   - 2: adds version, day_calls, month_calls, and the history: days
//     (the last HistoryDays finished days) and months (the last
//     HistoryMonths finished months), each {"period", "bytes", "calls"},
//     oldest first, only the periods something was relayed in.
//
// A later version only adds keys, so any version is read for the keys
// this relayd knows (a relayd put back to an older release keeps the
// counts and the history it understands), and an older relayd reading a
// version 2 file keeps its day and month counts.
const FileVersion = 2

// file is usage.json.
type file struct {
	Version int `json:"version,omitempty"`
	Counts
	Days   []Period `json:"days,omitempty"`
	Months []Period `json:"months,omitempty"`
}

// decodeFile reads usage.json of any version: version 1 needs no
// migration beyond zero calls and an empty history, which the missing
// keys give.
func decodeFile(data []byte) (file, error) {
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return file{}, err
	}
	if !validCounts(f.Counts) {
		return file{}, fmt.Errorf("day %q or month %q is not a date", f.Day, f.Month)
	}
	return f, nil
}
