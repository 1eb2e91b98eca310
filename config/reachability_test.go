package config

import (
	"slices"
	"strings"
	"testing"
)

func TestReachabilitySTUN(t *testing.T) {
	cfg, err := Parse(strings.NewReader(`{"public_address_stun": ["a.example.org:3478"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.ReachabilitySTUN(); !slices.Equal(got, []string{"a.example.org:3478"}) || cfg.Reachability.Interval().Minutes() != 60 {
		t.Fatalf("servers %v, interval %s: want public_address_stun and an hour", got, cfg.Reachability.Interval())
	}
	cfg, err = Parse(strings.NewReader(`{"public_address_stun": ["a.example.org:3478"], "reachability": {"stun_servers": ["b.example.org:3478"], "interval_minutes": 15}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.ReachabilitySTUN(); !slices.Equal(got, []string{"b.example.org:3478"}) || cfg.Reachability.Interval().Minutes() != 15 {
		t.Fatalf("servers %v, interval %s", got, cfg.Reachability.Interval())
	}
}
