package config

import (
	"fmt"
	"time"

	"mellium.im/xmpp/jid"
)

// Directory configures relay directories: XMPP publish-subscribe nodes
// where relays publish an item about themselves and trackers read them
// (docs/directory.md).
type Directory struct {
	// Publish lists the nodes this relay publishes its item to (the
	// same directory mirrored on several servers: one entry each).
	Publish []DirectoryNode `json:"publish,omitempty"`
	// Subscribe lists the nodes read: their relays are listed in
	// <services/> next to those the tracker's crawl found.
	Subscribe []DirectoryNode `json:"subscribe,omitempty"`
	// RefreshSeconds is how often the item is published again while the
	// relay runs; readers forget an item not refreshed for three times
	// as long.
	RefreshSeconds int `json:"refresh_seconds"`
	// Country (ISO 3166-1 alpha-2, upper case) and Region (free text) are
	// the coarse location the donor chooses to publish; both optional.
	Country string `json:"country,omitempty"`
	Region  string `json:"region,omitempty"`
}

// DirectoryNode is a publish-subscribe node: the service's JID (e.g.
// pubsub.example.org) and the node's name.
type DirectoryNode struct {
	Service string `json:"service"`
	Node    string `json:"node"`
	// Session names the xmpp service (xmpp[].name) whose session reaches
	// the node: a mirror on another server the relay has a session
	// with. Empty = the first online one (for publishing: of a public
	// service).
	Session string `json:"session,omitempty"`
}

// Bounds of the directory keys.
const (
	maxDirectoryNodes   = 8
	maxDirectoryNodeLen = 256
	maxRegionLen        = 64
)

// Refresh is directory.refresh_seconds as a duration.
func (d Directory) Refresh() time.Duration { return time.Duration(d.RefreshSeconds) * time.Second }

// validateDirectory checks directory.*: a relay publishes only when
// anyone may use it (a roster-policy relay is for its owner's contacts
// and is never published).
func (c Config) validateDirectory(p *fieldErrors) {
	d := c.Directory
	if d.RefreshSeconds < 5 || d.RefreshSeconds > 3600 {
		p.addf("directory.refresh_seconds", "%d is outside 5-3600", d.RefreshSeconds)
	}
	for list, nodes := range map[string][]DirectoryNode{"publish": d.Publish, "subscribe": d.Subscribe} {
		if len(nodes) > maxDirectoryNodes {
			p.addf("directory."+list, "%d nodes, at most %d", len(nodes), maxDirectoryNodes)
		}
		for i, n := range nodes {
			key := fmt.Sprintf("directory.%s[%d]", list, i)
			if j, err := jid.Parse(n.Service); err != nil || n.Service == "" || j.Localpart() != "" || j.Resourcepart() != "" {
				p.addf(key+".service", "%q is not a service's domain", n.Service)
			}
			if n.Node == "" || len(n.Node) > maxDirectoryNodeLen {
				p.addf(key+".node", "must be 1-%d bytes long", maxDirectoryNodeLen)
			}
			if n.Session != "" {
				c.validateDirectorySession(p, key, list, n.Session)
			}
		}
	}
	if d.Country != "" && !(len(d.Country) == 2 && d.Country[0] >= 'A' && d.Country[0] <= 'Z' && d.Country[1] >= 'A' && d.Country[1] <= 'Z') {
		p.addf("directory.country", "%q is not a two-letter upper-case country code", d.Country)
	}
	if len(d.Region) > maxRegionLen {
		p.addf("directory.region", "longer than %d bytes", maxRegionLen)
	}
	if len(d.Publish) == 0 {
		return
	}
	public := false
	for _, s := range c.XMPP {
		public = public || s.Policy != PolicyRoster
	}
	if !public {
		p.addf("directory.publish", "no XMPP service has the public policy: roster-policy relays are never published")
	}
}

// validateDirectorySession checks that a node's session names a service,
// a public one for publishing.
func (c Config) validateDirectorySession(p *fieldErrors, key, list, name string) {
	for _, s := range c.XMPP {
		if s.DefaultName() != name {
			continue
		}
		if list == "publish" && s.Policy == PolicyRoster {
			p.addf(key+".session", "%q has the roster policy: roster-policy relays are never published", name)
		}
		return
	}
	p.addf(key+".session", "no xmpp service is named %q", name)
}
