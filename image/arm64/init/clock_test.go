//go:build linux

package main

import (
	"testing"
	"time"
)

func TestParseClockStep(t *testing.T) {
	for _, c := range []struct {
		line   string
		step   time.Duration
		ok     bool
		hasErr bool
	}{
		{"jnrelay-clock-step 86400", 24 * time.Hour, true, false},
		{"jnrelay-clock-step -172800\r", -48 * time.Hour, true, false},
		{"  jnrelay-clock-step +5 ", 5 * time.Second, true, false},
		{"jnrelay-clock-step", 0, true, true},
		{"jnrelay-clock-step 1 2", 0, true, true},
		{"jnrelay-clock-step 1.5", 0, true, true},
		{"jnrelay-clock-step 99999999999", 0, true, true},
		{"", 0, false, false},
		{"hello", 0, false, false},
		{"jnrelay-clock-stepper 5", 0, false, false},
	} {
		step, ok, err := parseClockStep(c.line)
		if step != c.step || ok != c.ok || (err != nil) != c.hasErr {
			t.Errorf("%q: got %s %v %v, want %s %v error=%v", c.line, step, ok, err, c.step, c.ok, c.hasErr)
		}
	}
}
