package xmppsession

import (
	"slices"
	"testing"

	"mellium.im/sasl"
)

// TestPlainOnlyWhenAllowed: a server chosen by whoever wrote the
// configuration that offers only PLAIN must not be handed the password
// unless the account says allow_plain.
func TestPlainOnlyWhenAllowed(t *testing.T) {
	names := func(ms []sasl.Mechanism) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Name)
		}
		return out
	}
	for _, c := range []struct {
		plus, plain bool
		want        []string
	}{
		{true, false, []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1"}},
		{false, false, []string{"SCRAM-SHA-256", "SCRAM-SHA-1"}},
		{true, true, []string{"SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-1", "PLAIN"}},
		{false, true, []string{"SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"}},
	} {
		if got := names(mechanisms(c.plus, c.plain)); !slices.Equal(got, c.want) {
			t.Errorf("plus=%v plain=%v: %v, want %v", c.plus, c.plain, got, c.want)
		}
	}
}
