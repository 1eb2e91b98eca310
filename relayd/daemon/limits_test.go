package daemon

import (
	"testing"

	"github.com/jnrelay/jnrelay/config"
)

func TestDomainChannels(t *testing.T) {
	for _, c := range []struct {
		name     string
		limits   config.Limits
		capacity int
		want     int
	}{
		{"default: a quarter of the port range", config.Limits{}, 250, 62},
		{"default: a quarter of max_channels when smaller", config.Limits{MaxChannels: 40}, 250, 10},
		{"default: max_channels above the range does not count", config.Limits{MaxChannels: 1000}, 250, 62},
		{"default: at least one", config.Limits{MaxChannels: 2}, 250, 1},
		{"default: a one-channel relay", config.Limits{}, 1, 1},
		{"a count", config.Limits{MaxChannelsPerDomain: 7, MaxChannels: 2}, 250, 7},
		{"off", config.Limits{MaxChannelsPerDomain: -1}, 250, 0},
	} {
		if got := domainChannels(c.limits, c.capacity); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}
