package chaos

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// floodServer is the server end of an XEP-0114 component connection, the
// load generator of TestChannelRequestFlood: it accepts relayd's
// handshake, then writes IQs at rates no real server relays from one
// account (Prosody and ejabberd throttle c2s long before), and times each
// answer by its id.
type floodServer struct {
	ln     net.Listener
	secret string

	mu      sync.Mutex
	answers map[string]answer // by IQ id
	changed chan struct{}
}

type answer struct {
	at        time.Time
	typ, cond string
}

func newFloodServer(t *testing.T, secret string) *floodServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return &floodServer{ln: ln, secret: secret, answers: map[string]answer{}, changed: make(chan struct{})}
}

// accept takes relayd's connection and completes the component handshake.
func (s *floodServer) accept(ctx context.Context) (net.Conn, error) {
	if d, ok := ctx.Deadline(); ok {
		s.ln.(*net.TCPListener).SetDeadline(d)
	}
	c, err := s.ln.Accept()
	if err != nil {
		return nil, err
	}
	dec := xml.NewDecoder(c)
	if _, err := nextStart(dec, "stream"); err != nil {
		c.Close()
		return nil, fmt.Errorf("stream header: %w", err)
	}
	const id = "flood-stream-1"
	if _, err := fmt.Fprintf(c, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' from='relay.localhost' id='%s'>`, id); err != nil {
		c.Close()
		return nil, err
	}
	hs, err := nextStart(dec, "handshake")
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("handshake: %w", err)
	}
	var digest string
	if err := dec.DecodeElement(&digest, &hs); err != nil {
		c.Close()
		return nil, err
	}
	sum := sha1.Sum([]byte(id + s.secret))
	if !strings.EqualFold(strings.TrimSpace(digest), hex.EncodeToString(sum[:])) {
		c.Close()
		return nil, fmt.Errorf("handshake digest %q does not match the secret", digest)
	}
	if _, err := io.WriteString(c, "<handshake/>"); err != nil {
		c.Close()
		return nil, err
	}
	go s.read(dec)
	return c, nil
}

func nextStart(dec *xml.Decoder, local string) (xml.StartElement, error) {
	for {
		tok, err := dec.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == local {
			return se, nil
		}
	}
}

// read records relayd's answers until the stream ends.
func (s *floodServer) read(dec *xml.Decoder) {
	type iq struct {
		ID    string `xml:"id,attr"`
		Type  string `xml:"type,attr"`
		Error struct {
			Inner []struct{ XMLName xml.Name } `xml:",any"`
		} `xml:"error"`
	}
	for {
		se, err := nextStart(dec, "iq")
		if err != nil {
			return
		}
		var q iq
		if err := dec.DecodeElement(&q, &se); err != nil {
			return
		}
		a := answer{at: time.Now(), typ: q.Type}
		for _, in := range q.Error.Inner {
			if in.XMLName.Local != "text" {
				a.cond = in.XMLName.Local
			}
		}
		s.mu.Lock()
		s.answers[q.ID] = a
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
}

// waitAnswers waits until every id in ids has an answer.
func (s *floodServer) waitAnswers(ctx context.Context, ids []string) error {
	for {
		s.mu.Lock()
		missing := 0
		for _, id := range ids {
			if _, ok := s.answers[id]; !ok {
				missing++
			}
		}
		changed := s.changed
		s.mu.Unlock()
		if missing == 0 {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d requests unanswered: %w", missing, len(ids), ctx.Err())
		}
	}
}

func channelIQ(id, from string) string {
	return `<iq type='get' id='` + id + `' from='` + from + `' to='relay.localhost'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='udp'/></iq>`
}

// TestChannelRequestFlood: 10,000 channel requests a second for 3 s, from
// one JID, then from 5,000 JIDs of one domain, then from 5,000 JIDs of
// 5,000 domains, while ten other JIDs (of ten other domains) ask for a
// channel every 50 ms between them. One flooder never holds more than its
// per-JID limit of channels, one domain never more than its share (a
// quarter of the 100 channels); every request is answered; the honest ones
// are granted while there are ports (flooders from many domains exhaust the
// 100 channels: then they get resource-constraint, answered as fast). Their
// latency is logged, and held to p99 ≤ 100 ms under `make bench`.
func TestChannelRequestFlood(t *testing.T) {
	for _, tc := range []struct {
		name              string
		flooders, domains int
		min, max          int
	}{
		{"one-jid", 1, 1, 29200, 29599},
		{"many-jids", 5000, 1, 29600, 29999},
		{"many-domains", 5000, 5000, 28200, 28599},
	} {
		t.Run(tc.name, func(t *testing.T) { flood(t, tc.flooders, tc.domains, tc.min, tc.max) })
	}
}

func flood(t *testing.T, flooders, domains, lo, hi int) {
	const (
		rate     = 10000 // flood requests per second
		duration = 3 * time.Second
		batch    = 100 // requests per write, every 10 ms
		honestN  = 10
		perJID   = 16 // config.Default's limits.per_jid_channels
	)
	capacity := (hi - lo + 1) / 4
	perDomain := capacity / 4 // the default limits.max_channels_per_domain
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rd, srv, conn := componentRelay(ctx, t, "flood", lo, hi)
	rssBefore := rss(rd.PID())

	// One writer owns the connection: the flood in batches every 10 ms,
	// an honest request (from one of ten JIDs in turn) every 50 ms.
	w := bufio.NewWriterSize(conn, 64<<10)
	var floodIDs, honestIDs []string
	floodFrom := map[string]string{}
	sent := map[string]time.Time{}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	began := time.Now()
	for i := 0; time.Since(began) < duration; i++ {
		<-tick.C
		for j := range batch {
			n := i*batch + j
			id, from := "f"+strconv.Itoa(n), fmt.Sprintf("flooder%d@flood%d.example/x", n%flooders, n%flooders%domains)
			floodIDs = append(floodIDs, id)
			floodFrom[id] = from
			w.WriteString(channelIQ(id, from))
		}
		if i%5 == 0 {
			id := "h" + strconv.Itoa(i)
			honestIDs = append(honestIDs, id)
			u := (i / 5) % honestN // a domain each: they are not the flood's domain's business
			w.WriteString(channelIQ(id, fmt.Sprintf("user%d@example%d.net/phone", u, u)))
			sent[id] = time.Now()
		}
		if err := w.Flush(); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	t.Logf("sent %d flood requests from %d JIDs of %d domains and %d honest ones in %s", len(floodIDs), flooders, domains, len(honestIDs), time.Since(began).Round(time.Millisecond))

	wctx, wcancel := context.WithTimeout(ctx, 60*time.Second)
	defer wcancel()
	if err := srv.waitAnswers(wctx, append(slices.Clone(honestIDs), floodIDs...)); err != nil {
		t.Fatal(err)
	}
	answeredAt := time.Since(began)
	srv.mu.Lock()
	granted := map[string]int{}
	conds := map[string]int{}
	for _, id := range floodIDs {
		a := srv.answers[id]
		if a.typ == "result" {
			granted[floodFrom[id]]++
		}
		conds[a.typ+"/"+a.cond]++
	}
	honestConds := map[string]int{}
	var lat []time.Duration
	for _, id := range honestIDs {
		a := srv.answers[id]
		honestConds[a.typ+"/"+a.cond]++
		lat = append(lat, a.at.Sub(sent[id]))
	}
	srv.mu.Unlock()
	p50, p99 := harness.Quantile(lat, 0.5), harness.Quantile(lat, 0.99)
	t.Logf("flood answers by type/condition: %v; all answered %s after the first", conds, answeredAt.Round(time.Millisecond))
	t.Logf("honest requests: %v, latency p50 %s p99 %s max %s", honestConds, p50, p99, slices.Max(lat))
	t.Logf("relayd RSS %d kB before, %d kB after", rssBefore, rss(rd.PID()))
	total := 0
	for from, n := range granted {
		total += n
		if n > perJID {
			t.Errorf("%s got %d channels, over its limit of %d", from, n, perJID)
		}
	}
	if total+honestConds["result/"] > capacity {
		t.Errorf("%d channels granted, more than the %d the ports hold", total+honestConds["result/"], capacity)
	}
	if domains == 1 {
		// One domain: at most its share, so the honest ones all get theirs.
		if want := min(flooders*perJID, perDomain); total != want {
			t.Errorf("the flooding domain got %d channels, want %d (its share %d, %d per JID)", total, want, perDomain, perJID)
		}
		if honestConds["result/"] != len(honestIDs) {
			t.Errorf("%d of %d honest requests granted beside one flooding domain: %v", honestConds["result/"], len(honestIDs), honestConds)
		}
	}
	for c, n := range honestConds {
		// Granted, or refused because flooders of many domains took every port.
		if c != "result/" && !(domains > 1 && c == "error/resource-constraint") {
			t.Errorf("%d honest requests answered %s", n, c)
		}
	}
	// A latency target is a measurement, not a unit test's business: only
	// `make bench` (-chaos.targets) holds the run to it.
	if *targets && p99 > 100*time.Millisecond {
		t.Errorf("honest requests' latency p99 %s under the flood, want ≤ 100 ms", p99)
	}
}

var targets = flag.Bool("chaos.targets", false, "also hold the flood tests to their latency targets (make bench)")

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// TestHostileStanzas sends relayd, on its component connection, stanzas
// no honest server forwards: 100,000 levels of nesting, 20,000 attributes
// on one element, a 4 MiB text payload, an IQ with two ids, and requests
// with forged senders (none, and the relay itself). relayd
// answers what it can address (bad-request), its memory stays bounded,
// and an ordinary request right behind them is answered at once.
func TestHostileStanzas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rd, srv, conn := componentRelay(ctx, t, "hostile", 28600, 28699)
	rssBefore := rss(rd.PID())

	const from = "mallory@example.net/x"
	open := `<iq type='get' id='%s' from='` + from + `' to='relay.localhost'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='udp'>`
	closeIQ := `</channel></iq>`
	var attrs strings.Builder
	for i := range 20000 {
		fmt.Fprintf(&attrs, " a%d='x'", i)
	}
	hostile := []struct{ id, doc string }{
		// Each under relayd's stanza caps (xmppsession.DefaultMaxStanza,
		// 1 MiB, 1,024 levels): refused one by one on the same session;
		// TestOversizedStanza sends larger and deeper ones.
		{"nested", fmt.Sprintf(open, "nested") + strings.Repeat("<a>", 1000) + strings.Repeat("</a>", 1000) + closeIQ},
		{"attrs", fmt.Sprintf(open, "attrs") + "<b" + attrs.String() + "/>" + closeIQ},
		{"huge", fmt.Sprintf(open, "huge") + "<c>" + strings.Repeat("x", 900<<10) + "</c>" + closeIQ},
		{"twoids", `<iq type='get' id='twoids' id='other' from='` + from + `' to='relay.localhost'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`},
		// Forged senders, which only the component's server can write.
		{"nofrom", `<iq type='get' id='nofrom' to='relay.localhost'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel'/></iq>`},
		{"self", channelIQ("self", "relay.localhost")},
	}
	w := bufio.NewWriterSize(conn, 64<<10)
	began := time.Now()
	for _, h := range hostile {
		if _, err := w.WriteString(h.doc); err != nil {
			t.Fatalf("write %s: %v", h.id, err)
		}
	}
	w.WriteString(channelIQ("honest", "alice@example.net/phone"))
	if err := w.Flush(); err != nil {
		t.Fatalf("write: %v", err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	defer wcancel()
	if err := srv.waitAnswers(wctx, []string{"honest"}); err != nil {
		t.Fatalf("the request behind the hostile stanzas: %v", err)
	}
	took := time.Since(began)
	srv.mu.Lock()
	honest := srv.answers["honest"]
	got := map[string]answer{}
	for _, h := range hostile {
		if a, ok := srv.answers[h.id]; ok {
			got[h.id] = a
		}
	}
	srv.mu.Unlock()
	rssAfter := rss(rd.PID())
	t.Logf("hostile stanzas answered: %v; the honest request answered %s after the first byte (%s)", got, took.Round(time.Millisecond), honest.typ)
	t.Logf("relayd RSS %d kB before, %d kB after", rssBefore, rssAfter)
	if honest.typ != "result" {
		t.Errorf("honest request: %+v", honest)
	}
	for _, id := range []string{"nested", "attrs", "huge"} {
		if a, ok := got[id]; !ok || a.typ != "error" || a.cond != "bad-request" {
			t.Errorf("%s: answer %+v, want bad-request", id, a)
		}
	}
	// The session layer reports a stanza from the component's own domain
	// as one without sender, so both forgeries are refused as bad-request
	// (a client account's own full JID gets forbidden: relayd/jinglenodes
	// TestClientAccountServesItsOwnerButNotItself).
	for _, id := range []string{"nofrom", "self"} {
		if a, ok := got[id]; !ok || a.typ != "error" || a.cond != "bad-request" {
			t.Errorf("%s: answer %+v, want bad-request", id, a)
		}
	}
	if _, ok := got["twoids"]; ok {
		t.Error("an IQ with two ids was answered")
	}
	if rd.Exited() {
		t.Fatal("relayd exited")
	}
}

// TestOversizedStanza: the component's server sends relayd a 64 MiB IQ,
// then one nested 100,000 levels deep. For each, relayd reads no more than
// its caps allow, ends the connection with a policy-violation stream
// error, reconnects and serves the next request; its peak RSS stays far
// from what the stanzas would cost (a 64 MiB IQ took it from 17 MB to
// 213 MB without the cap).
func TestOversizedStanza(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rd, srv, conn := componentRelay(ctx, t, "oversized", 28700, 28799)
	rssBefore, _ := harness.ProcMem(rd.PID())

	const size = 64 << 20
	open := `<iq type='get' id='%s' from='mallory@example.net/x' to='relay.localhost'><channel xmlns='http://jabber.org/protocol/jinglenodes#channel' protocol='udp'>`
	for _, h := range []struct {
		name  string
		chunk string // repeated up to size bytes
	}{
		{"huge", strings.Repeat("x", 64<<10)},
		{"deep", strings.Repeat("<a>", 20<<10)},
	} {
		if _, err := fmt.Fprintf(conn, open, h.name); err != nil {
			t.Fatal(err)
		}
		chunk := []byte(h.chunk)
		sent := 0
		for sent < size {
			n, err := conn.Write(chunk)
			sent += n
			if err != nil {
				break // relayd hung up, as it should
			}
		}
		if sent >= size {
			t.Errorf("%s: relayd took the whole %d byte stanza", h.name, size)
		}
		// relayd comes back on a new connection and serves it.
		next, err := srv.accept(ctx)
		if err != nil {
			t.Fatalf("%s: no reconnection: %v", h.name, err)
		}
		defer next.Close()
		if _, err := io.WriteString(next, channelIQ("after-"+h.name, "alice@example.net/phone")); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		err = srv.waitAnswers(wctx, []string{"after-" + h.name})
		wcancel()
		if err != nil {
			t.Fatalf("%s: the request after the reconnection: %v", h.name, err)
		}
		rss, hwm := harness.ProcMem(rd.PID())
		t.Logf("%s: the server wrote %d of %d bytes before relayd hung up; relayd RSS %d kB before, %d kB now, peak %d kB", h.name, sent, size, rssBefore, rss, hwm)
		conn = next
	}
	if n := strings.Count(rd.Logs(), "policy-violation"); n < 2 {
		t.Errorf("relayd logged %d policy violations, want 2:\n%s", n, tail(rd.Logs(), 20))
	}
	if _, hwm := harness.ProcMem(rd.PID()); hwm-rssBefore > 16<<10 {
		t.Errorf("relayd peak RSS %d kB, %d kB above its %d kB before the stanzas (want < 16 MiB)", hwm, hwm-rssBefore, rssBefore)
	}
	if rd.Exited() {
		t.Fatal("relayd exited")
	}
}

// componentRelay starts relayd (root namespace, loopback, ports min-max)
// as a component of a floodServer and returns them with the accepted
// connection.
func componentRelay(ctx context.Context, t *testing.T, name string, min, max int) (*harness.Relayd, *floodServer, net.Conn) {
	t.Helper()
	harness.RequireRoot(t)
	if relaydBin == "" {
		t.Fatal("RELAYD_BIN is not set (make test sets it)")
	}
	srv := newFloodServer(t, name+"-secret")
	cfg := config.Default()
	cfg.PublicAddress, cfg.ListenAddress = "127.0.0.1", "127.0.0.1"
	cfg.Ports = config.PortRange{Min: min, Max: max} // below the ephemeral range
	cfg.STUN.Enabled = false
	cfg.Reconnect = config.Reconnect{MinSeconds: 0.2, MaxSeconds: 1}
	cfg.XMPP = []config.Service{{Name: name, Type: "component", Server: srv.ln.Addr().String(), Domain: "relay.localhost", Secret: srv.secret}}
	rd, err := harness.StartRelaydArgs(relaydBin, "", t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rd.Stop()
		if t.Failed() {
			t.Logf("relayd logs (last lines):\n%s", tail(rd.Logs(), 40))
		}
	})
	conn, err := srv.accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rd, srv, conn
}

// rss is pid's resident memory in kB.
func rss(pid int) int {
	kb, _ := harness.ProcMem(pid)
	return kb
}
