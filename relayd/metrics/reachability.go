package metrics

import "github.com/jnrelay/jnrelay/relayd/reachability"

// Reachability is the last reachability check (reachability.Report): the
// verdict over the relay ports and over the STUN port ("" when the STUN
// server is off), and when it finished (Unix seconds, 0 before).
type Reachability struct {
	RelayPorts, STUN string
	CheckedAt        int64
}

// reachabilityVerdicts are the verdicts' label values.
var reachabilityVerdicts = func() []string {
	var out []string
	for _, v := range reachability.Verdicts() {
		out = append(out, string(v))
	}
	return out
}()

// reachabilityFamilies are the relayd_reachability* families.
type reachabilityFamilies struct {
	verdict, checked family
}

func newReachabilityFamilies() reachabilityFamilies {
	return reachabilityFamilies{
		verdict: family{name: "relayd_reachability", typ: gaugeType, labels: []string{"check", "verdict"},
			help: "1 for the last reachability check's verdict, else 0: whether datagrams from the Internet reach the relay ports (check=relay_ports) and the STUN port (check=stun). Verdicts: reachable, not_reachable, cannot_tell, pending."},
		checked: family{name: "relayd_reachability_checked_timestamp_seconds", typ: gaugeType,
			help: "When the last reachability check finished (Unix time; 0 before the first)."},
	}
}

// write writes the families from one snapshot, a state set per check.
func (f *reachabilityFamilies) write(w *textWriter, r Reachability) {
	for _, check := range [...]struct{ name, verdict string }{{"relay_ports", r.RelayPorts}, {"stun", r.STUN}} {
		if check.verdict == "" {
			continue
		}
		for _, v := range reachabilityVerdicts {
			w.uint(&f.verdict, boolValue(check.verdict == v), check.name, v)
		}
	}
	w.uint(&f.checked, uint64(max(r.CheckedAt, 0)))
}
