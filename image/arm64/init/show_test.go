//go:build linux

package main

import "testing"

func TestParseShow(t *testing.T) {
	for _, tc := range []struct {
		line, path string
		ok, err    bool
	}{
		{"jnrelay-show /proc/net/nf_conntrack", "/proc/net/nf_conntrack", true, false},
		{"jnrelay-show /etc/shadow", "", true, true},
		{"jnrelay-show /proc/../etc/shadow", "", true, true},
		{"jnrelay-show", "", true, true},
		{"jnrelay-clock-step 5", "", false, false},
		{"", "", false, false},
	} {
		path, ok, err := parseShow(tc.line)
		if path != tc.path || ok != tc.ok || (err != nil) != tc.err {
			t.Errorf("%q: %q %v %v, want %q %v error %v", tc.line, path, ok, err, tc.path, tc.ok, tc.err)
		}
	}
}
