package metrics

import (
	"strings"
	"testing"
)

// relayd_calls_served_total, line by line as a scraper reads it: a
// counter with both kinds, at zero before any call, then the sources'
// totals as they are.
func TestCallsServedExposition(t *testing.T) {
	calls := CallsServed{}
	reg := NewRegistry(Sources{CallsServed: func() CallsServed { return calls }}, "dev")
	const header = `# HELP relayd_calls_served_total Calls served since relayd started: channels (kind=channel) and built-in TURN allocations (kind=turn) that relayed at least one datagram each way.
# TYPE relayd_calls_served_total counter
`
	for _, c := range []struct {
		calls CallsServed
		want  string
	}{
		{CallsServed{}, header + "relayd_calls_served_total{kind=\"channel\"} 0\nrelayd_calls_served_total{kind=\"turn\"} 0\n"},
		{CallsServed{Channels: 17, TURN: 3}, header + "relayd_calls_served_total{kind=\"channel\"} 17\nrelayd_calls_served_total{kind=\"turn\"} 3\n"},
	} {
		calls = c.calls
		text := string(reg.AppendText(nil))
		i := strings.Index(text, "# HELP relayd_calls_served_total ")
		if i < 0 {
			t.Fatalf("%+v: no relayd_calls_served_total:\n%s", c.calls, text)
		}
		got, _, _ := strings.Cut(text[i:], "\n# HELP go_")
		got += "\n"
		if got != c.want {
			t.Errorf("%+v exposed:\n%s\nwant:\n%s", c.calls, got, c.want)
		}
	}
}
