package dirscale

import (
	"context"
	"crypto/x509"
	"encoding/xml"
	"fmt"
	"os"
	"sync"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/relayd/directory"
	"github.com/jnrelay/jnrelay/relayd/xmppsession"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// handshakes bounds the logins in flight: the servers are single
// processes on a 2-core machine, and a burst of thousands would only time
// out.
const handshakes = 16

// publisher is one simulated relay: an account with a session on each
// mirror. It publishes one item about its first session's address to
// both mirrors (the server stamps the publisher, whose bare JID is the
// item's: the trust rule holds).
type publisher struct {
	sessions []*xmppsession.Session
	item     directory.Item
}

// fleet is the simulated relays and the sessions' lifetime.
type fleet struct {
	pubs   []*publisher
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// discard takes every incoming stanza and drops it (notifications to
// the extra subscribers).
var discard = xmpp.HandlerFunc(func(xmlstream.TokenReadEncoder, *xml.StartElement) error { return nil })

// connect logs in n accounts (names from bulk, from first on), one
// session on each server, and waits until every session is online.
func connect(ctx context.Context, srvs []*harness.XMPPServer, bulk harness.BulkUsers, first, n int) (*fleet, error) {
	pool := x509.NewCertPool()
	for _, s := range srvs {
		pem, err := os.ReadFile(s.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read CA: %w", err)
		}
		pool.AppendCertsFromPEM(pem)
	}
	runCtx, cancel := context.WithCancel(context.Background())
	f := &fleet{cancel: cancel}
	type login struct {
		s      *xmppsession.Session
		kind   string
		online chan struct{}
	}
	var logins []login
	for i := range n {
		p := &publisher{}
		f.pubs = append(f.pubs, p)
		for _, srv := range srvs {
			online := make(chan struct{})
			var once sync.Once
			s, err := xmppsession.NewClient(xmppsession.ClientConfig{
				Name: bulk.Name(first + i), JID: jid.MustParse(bulk.Name(first+i) + "@" + srv.Domain),
				Password: bulk.Password, Server: srv.C2S.String(), RootCAs: pool,
				// Short at first: a server that refuses channel
				// binding (ejabberd) costs every session one failed
				// login and one backoff. Long at the end: thousands
				// of sessions to a killed server must not hammer it.
				Backoff: xmppsession.Backoff{Min: 200 * time.Millisecond, Max: time.Minute},
			})
			if err != nil {
				f.close()
				return nil, err
			}
			s.SetHandler(discard)
			s.SetOnOnline(func(context.Context, *xmpp.Session) error {
				once.Do(func() { close(online) })
				return nil
			})
			p.sessions = append(p.sessions, s)
			logins = append(logins, login{s, srv.Kind, online})
		}
	}
	err := runLimited(ctx, len(logins), handshakes, func(ctx context.Context, i int) error {
		l := logins[i]
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			l.s.Run(runCtx)
		}()
		select {
		case <-l.online:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("%s on %s never online: %w (%s)", l.s.Name(), l.kind, ctx.Err(), l.s.Status().LastError)
		}
	})
	if err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// retried is how many sessions failed a login before they came online,
// and the first of their errors.
func (f *fleet) retried() (int, string) {
	n, first := 0, "none"
	for _, p := range f.pubs {
		for _, s := range p.sessions {
			if st := s.Status(); st.LastError != "" {
				if n == 0 {
					first = st.LastError
				}
				n++
			}
		}
	}
	return n, first
}

// close ends every session and waits for them.
func (f *fleet) close() {
	f.cancel()
	f.wg.Wait()
}

// itemOf is the item publisher i says about itself; free varies with
// the update round so that every publication changes the item.
func itemOf(addr jid.JID, i, round int) directory.Item {
	countries := []string{"DE", "FR", "US", "BR", "JP"}
	return directory.Item{
		JID: addr, Policy: "public", JingleNodes: true, TURN: []string{"udp", "tls"},
		Free: 1 + (i+round)%249, Total: 250, Country: countries[i%len(countries)], Region: "scale test",
		Version: "jnrelay dirscale", Reachability: "public", Status: directory.StatusOK,
		Updated: time.Now().Truncate(time.Second),
	}
}

func wrap(local string, inner xml.TokenReader, attrs ...xml.Attr) xml.TokenReader {
	return xmlstream.Wrap(inner, xml.StartElement{Name: xml.Name{Local: local}, Attr: attrs})
}

func attr(name, value string) xml.Attr { return xml.Attr{Name: xml.Name{Local: name}, Value: value} }

func pubsub(inner xml.TokenReader) xml.TokenReader {
	return xmlstream.Wrap(inner, xml.StartElement{Name: xml.Name{Space: directory.NSPubsub, Local: "pubsub"}})
}

// publishPayload is what relayd's publisher sends: the item, encoded by
// relayd/directory, under the id of its JID.
func publishPayload(node string, it directory.Item) xml.TokenReader {
	return pubsub(wrap("publish", wrap("item", it.TokenReader(), attr("id", it.JID.String())), attr("node", node)))
}

// publish publishes publisher i's item (update round round) to every
// mirror whose session is online (sessions on a killed server are
// skipped) and returns the item; it fails when no mirror took it.
func (p *publisher) publish(ctx context.Context, nodes []directory.Node, i, round int) (directory.Item, error) {
	it := itemOf(p.sessions[0].Addr(), i, round)
	p.item = it
	var errs []error
	sent := 0
	for k, s := range p.sessions {
		if s.Status().State != xmppsession.StateOnline {
			continue
		}
		var ignored struct{ XMLName xml.Name }
		qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := s.Set(qctx, nodes[k].Service, publishPayload(nodes[k].Node, it), &ignored)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("publish %s to %s: %w", it.JID, nodes[k], err))
			continue
		}
		sent++
	}
	if sent > 0 {
		// A mirror that failed while another took the item: the
		// killed server of the last phase.
		return it, nil
	}
	if len(errs) == 0 {
		return it, fmt.Errorf("publish %s: no session online", it.JID)
	}
	return it, errs[0]
}

// subscribe subscribes the publisher's session k to node (an extra
// subscriber, which drops what it gets).
func (p *publisher) subscribe(ctx context.Context, k int, node directory.Node) error {
	s := p.sessions[k]
	var ignored struct{ XMLName xml.Name }
	req := pubsub(wrap("subscribe", nil, attr("node", node.Node), attr("jid", s.Addr().String())))
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := s.Set(qctx, node.Service, req, &ignored); err != nil {
		return fmt.Errorf("subscribe %s to %s: %w", s.Addr(), node, err)
	}
	return nil
}

// publishAll publishes publishers [from, to) with limited concurrency.
func (f *fleet) publishAll(ctx context.Context, nodes []directory.Node, from, to, round, inFlight int) error {
	return runLimited(ctx, to-from, inFlight, func(ctx context.Context, k int) error {
		_, err := f.pubs[from+k].publish(ctx, nodes, from+k, round)
		return err
	})
}
