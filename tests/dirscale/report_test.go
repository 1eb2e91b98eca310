package dirscale

import (
	"fmt"
	"strings"
	"testing"
)

// figure is one measured value of one server kind.
type figure struct{ name, value string }

// run is what one server kind's run measured, in order.
type run struct {
	kind    string
	figures []figure
}

func (r *run) add(t *testing.T, name, format string, args ...any) {
	t.Helper()
	v := fmt.Sprintf(format, args...)
	t.Logf("%s: %s", name, v)
	r.figures = append(r.figures, figure{name, v})
}

// command is the command line of this run.
func command() string {
	storage := ""
	if *flagStorage != "" {
		storage = " -dirscale.prosody-storage " + *flagStorage
	}
	return fmt.Sprintf("make bench-directory DIRSCALE_N=%d DIRSCALE_SERVERS=%s DIRSCALE_FLAGS='-dirscale.fresh %d -dirscale.updates %d -dirscale.subscribers %d -dirscale.lookups %d%s'",
		*flagN, *flagServers, *flagFresh, *flagUpdates, *flagSubs, *flagLookups, storage)
}

// table is the runs' figures as a markdown table, one column per kind.
func table(runs []*run) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Command: `%s`\n\n| figure |", command())
	for _, r := range runs {
		fmt.Fprintf(&b, " %s |", r.kind)
	}
	b.WriteString("\n|---|")
	for range runs {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	if len(runs) == 0 {
		return b.String()
	}
	for i, f := range runs[0].figures {
		fmt.Fprintf(&b, "| %s |", f.name)
		for _, r := range runs {
			v := "—"
			if i < len(r.figures) && r.figures[i].name == f.name {
				v = r.figures[i].value
			}
			fmt.Fprintf(&b, " %s |", v)
		}
		b.WriteString("\n")
	}
	return b.String()
}
