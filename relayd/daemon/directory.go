package daemon

import (
	"context"
	"encoding/xml"
	"fmt"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/directory"
	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
	"github.com/jnrelay/jnrelay/relayd/xmppsession"
)

// maxDirectoryListed bounds the directory's relays listed in <services/>.
const maxDirectoryListed = 20

// withdrawTimeout bounds taking the relay's item out of its directories
// at a clean stop.
const withdrawTimeout = 10 * time.Second

func directoryNodes(key string, nodes []config.DirectoryNode) ([]directory.Node, error) {
	var out []directory.Node
	for i, n := range nodes {
		svc, err := jinglenodes.ParseJIDList([]string{n.Service})
		if err != nil {
			return nil, fmt.Errorf("directory.%s[%d].service: %w", key, i, err)
		}
		out = append(out, directory.Node{Service: svc[0], Node: n.Node, Session: n.Session})
	}
	return out, nil
}

// startDirectory (re)starts publishing to and reading from the
// configured directories.
func (d *Daemon) startDirectory(cfg config.Config) error {
	d.stopSystem(partDirectory)
	ctx, cancel := context.WithTimeout(d.ctx, withdrawTimeout)
	if p := d.dirPublisher.Swap(nil); p != nil {
		p.Withdraw(ctx)
	}
	if r := d.dirReader.Swap(nil); r != nil {
		r.Unsubscribe(ctx)
	}
	cancel()
	c := cfg.Directory
	pubNodes, err := directoryNodes("publish", c.Publish)
	if err != nil {
		return err
	}
	subNodes, err := directoryNodes("subscribe", c.Subscribe)
	if err != nil {
		return err
	}
	if len(pubNodes) == 0 && len(subNodes) == 0 {
		return nil
	}
	log := d.log.With("part", "directory")
	var pub *directory.Publisher
	if len(pubNodes) > 0 {
		pub = directory.NewPublisher(directory.PublisherConfig{Nodes: pubNodes, Refresh: c.Refresh(), Logger: log,
			Session: d.publicSession, Self: func() (directory.Item, bool) { return d.directoryItem(c), !d.Draining() }})
		d.dirPublisher.Store(pub)
	}
	var rd *directory.Reader
	if len(subNodes) > 0 {
		rd = directory.NewReader(directory.ReaderConfig{Nodes: subNodes, Refresh: c.Refresh(), Logger: log,
			Session: d.onlineRequester, Self: d.sessionAddrs, Probe: directory.ChannelProbe})
		d.dirReader.Store(rd)
	}
	d.runSystem(partDirectory, func(ctx context.Context) {
		if rd != nil && pub != nil {
			go rd.Run(ctx)
		} else if rd != nil {
			rd.Run(ctx)
			return
		}
		pub.Run(ctx)
	})
	return nil
}

// withdrawDirectory takes the relay's item out of its directories and
// ends its subscriptions (a clean stop), while the sessions are still up.
func (d *Daemon) withdrawDirectory() {
	ctx, cancel := context.WithTimeout(d.ctx, withdrawTimeout)
	defer cancel()
	if p := d.dirPublisher.Load(); p != nil {
		p.Withdraw(ctx)
	}
	if r := d.dirReader.Load(); r != nil {
		r.Unsubscribe(ctx)
	}
}

// directoryItem describes the relay now.
func (d *Daemon) directoryItem(c config.Directory) directory.Item {
	total := d.dp.Capacity()
	if m := d.Config().Limits.MaxChannels; m > 0 && m < total {
		total = m
	}
	free := max(0, total-d.dp.Totals().Active)
	if d.gate.RelayWide() != nil {
		free = 0 // full, or the quota is used up: listed, with no room
	}
	it := directory.Item{JingleNodes: true, Free: free, Total: total, Country: c.Country, Region: c.Region,
		Version: "jnrelay " + d.version, Reachability: string(d.host.Load().Reachability()),
		Tracker: len(c.Subscribe) > 0}
	if t := d.external.Load().TURN; t != nil {
		it.TURN = append(it.TURN, t.Transport)
		if t.Builtin && t.TCP && t.Transport != "tcp" {
			it.TURN = append(it.TURN, "tcp")
		}
		if t.TLSPort > 0 {
			it.TURN = append(it.TURN, "tls")
		}
	}
	return it
}

// publicSession is the session to publish to n through: the one n names,
// else the first of a public-policy service, if online. The relay's item
// there is about its address.
func (d *Daemon) publicSession(n directory.Node) directory.Requester {
	return d.nodeSession(n, true)
}

// onlineRequester is the session to read n through: the one n names,
// else the first, if online.
func (d *Daemon) onlineRequester(n directory.Node) directory.Requester {
	return d.nodeSession(n, false)
}

func (d *Daemon) nodeSession(n directory.Node, public bool) directory.Requester {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, name := range d.order {
		p := d.xmpp[name]
		if p == nil || n.Session != "" && name != n.Session || public && p.service.Policy == config.PolicyRoster {
			continue
		}
		if p.session.Status().State == xmppsession.StateOnline {
			return p.session
		}
		if n.Session != "" {
			return nil
		}
	}
	return nil
}

// withDirectory hands directory notifications to the reader in force and
// everything else to next.
func (d *Daemon) withDirectory(next xmpp.Handler) xmpp.Handler {
	return xmpp.HandlerFunc(func(t xmlstream.TokenReadEncoder, start *xml.StartElement) error {
		if r := d.dirReader.Load(); r != nil {
			return r.Handler(next).HandleXMPP(t, start)
		}
		return next.HandleXMPP(t, start)
	})
}

// directoryNear is where the relay says it is: directory relays there
// are listed first.
func directoryNear(c config.Directory) directory.Near {
	return directory.Near{Country: c.Country, Region: c.Region}
}

// directoryListings are the directories' relays for <services/>, those
// already listed left out.
func (d *Daemon) directoryListings(listed []jinglenodes.Listing) []jinglenodes.Listing {
	r := d.dirReader.Load()
	if r == nil {
		return listed
	}
	seen := map[string]bool{}
	for _, l := range listed {
		seen[l.Address] = true
	}
	for _, it := range r.Listed(directoryNear(d.Config().Directory), maxDirectoryListed) {
		if a := it.JID.String(); !seen[a] {
			seen[a] = true
			listed = append(listed, jinglenodes.Listing{Kind: jinglenodes.ListingRelay, Address: a, Protocol: "udp"})
		}
	}
	return listed
}

// DirectoryStatus is what the relay publishes to and reads from its
// directories (docs/directory.md).
type DirectoryStatus struct {
	Publish []directory.PublishStatus `json:"publish,omitempty"`
	// Subscribe and the counts beside it are the reader's.
	Subscribe []directory.NodeStatus `json:"subscribe,omitempty"`
	*directory.ReaderTotals
}

// directoryStatus reports the directories, nil when none is configured.
func (d *Daemon) directoryStatus() *DirectoryStatus {
	p, r := d.dirPublisher.Load(), d.dirReader.Load()
	if p == nil && r == nil {
		return nil
	}
	var st DirectoryStatus
	if p != nil {
		st.Publish = p.Status()
	}
	if r != nil {
		rs := r.Status(directoryNear(d.Config().Directory), maxDirectoryListed)
		st.Subscribe, st.ReaderTotals = rs.Nodes, &rs.ReaderTotals
	}
	return &st
}
