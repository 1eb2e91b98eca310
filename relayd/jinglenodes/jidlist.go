package jinglenodes

import (
	"fmt"

	"mellium.im/xmpp/jid"
)

// ParseJIDList parses bare JIDs and domains: a policy's Allow and Deny
// (admission.Policy), the trackers and domains the tracker crawls.
func ParseJIDList(entries []string) ([]jid.JID, error) {
	out := make([]jid.JID, 0, len(entries))
	for _, e := range entries {
		j, err := jid.Parse(e)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", e, err)
		}
		out = append(out, j.Bare())
	}
	return out, nil
}
