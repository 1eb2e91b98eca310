package directory

import (
	"fmt"

	"mellium.im/xmpp/jid"
)

// Trust is how far a reader believes an entry.
type Trust int

const (
	// Refused entries are never listed.
	Refused Trust = iota
	// Unverified entries have the item id equal to the JID inside, but
	// the service did not say who published them: anyone allowed to
	// publish on the node may have. They are listed only once the relay
	// has granted a channel to a health probe.
	Unverified
	// Verified entries were published by the relay's own account or
	// domain (the item's publisher attribute, which the service sets).
	Verified
)

// Check applies the trust rule (docs/directory.md): the item must parse,
// its id must be the JID inside, and when the service names the
// publisher, the publisher's bare JID must be that JID's bare JID.
func (e Entry) Check() (Trust, error) {
	if e.Retracted {
		return Refused, fmt.Errorf("%w: a retraction", ErrInvalid)
	}
	if e.Err != nil {
		return Refused, e.Err
	}
	if e.ID != e.Item.JID.String() {
		return Refused, invalid("item id %q is not the relay's jid %q", e.ID, e.Item.JID.String())
	}
	if e.Publisher == "" {
		return Unverified, nil
	}
	p, err := jid.Parse(e.Publisher)
	if err != nil {
		return Refused, invalid("publisher %q: %v", e.Publisher, err)
	}
	if !p.Bare().Equal(e.Item.JID.Bare()) {
		return Refused, invalid("published by %s, not by %s", p.Bare(), e.Item.JID.Bare())
	}
	return Verified, nil
}

func (t Trust) String() string {
	switch t {
	case Verified:
		return "verified"
	case Unverified:
		return "unverified"
	}
	return "refused"
}
