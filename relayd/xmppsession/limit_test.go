package xmppsession

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

// TestScannerBoundaries feeds XML streams to the scanner byte-wise and
// whole: elements and text runs up to the limit pass whatever surrounds
// them (stream restarts, quotes and CDATA holding '>', comments, empty
// elements), and the first one beyond it fails.
func TestScannerBoundaries(t *testing.T) {
	const max = 300
	pad := func(n int) string { return strings.Repeat("x", n) }
	header := `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='example.org' version='1.0'>`
	for _, c := range []struct {
		name string
		xml  string
		ok   bool
	}{
		{"many small stanzas", header + strings.Repeat(`<iq id='1'><q/></iq> `, 100), true},
		{"stream restart", header + `<a/>` + header + `<b>` + pad(50) + `</b>` + header + `<c/>`, true},
		{"whitespace runs reset at each stanza", header + strings.Repeat(pad(0)+strings.Repeat(" ", 60)+`<p/>`, 10), true},
		{"quoted >", header + `<m a='>>' b="/>"><x/></m><m/>`, true},
		{"CDATA and comment", header + `<m><![CDATA[</m>]]><!-- </m> --></m><n/>`, true},
		{"empty top-level elements", header + strings.Repeat(`<presence from='a@b/c'/>`, 40), true},
		{"long text node", header + `<m><body>` + pad(400) + `</body></m>`, false},
		{"long attribute", header + `<m a='` + pad(400) + `'/>`, false},
		{"long text between stanzas", header + pad(400) + `<m/>`, false},
		{"long start tag name", header + `<` + pad(400) + `/>`, false},
		{"nested stanza summed", header + `<m>` + strings.Repeat(`<x/>`, 90) + `</m>`, false},
	} {
		for _, bytewise := range []bool{false, true} {
			s := stanzaScanner{max: max}
			var err error
			if bytewise {
				for i := 0; i < len(c.xml) && err == nil; i++ {
					_, err = s.feed([]byte{c.xml[i]})
				}
			} else {
				_, err = s.feed([]byte(c.xml))
			}
			if c.ok && err != nil {
				t.Errorf("%s (bytewise %v): %v", c.name, bytewise, err)
			}
			if !c.ok && !errors.Is(err, stream.PolicyViolation) {
				t.Errorf("%s (bytewise %v): err %v, want a policy violation", c.name, bytewise, err)
			}
		}
	}
}

// TestScannerDepth: elements nest up to maxDepth inside a stanza, with
// stream restarts between; one level more fails.
func TestScannerDepth(t *testing.T) {
	header := `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>`
	nest := func(n int) string { return strings.Repeat(`<a x='>'>`, n) + strings.Repeat(`</a>`, n) }
	s := stanzaScanner{max: 1 << 20}
	if _, err := s.feed([]byte(header + nest(maxDepth) + header + nest(maxDepth) + nest(maxDepth))); err != nil {
		t.Fatalf("%d levels: %v", maxDepth, err)
	}
	if _, err := s.feed([]byte(nest(maxDepth + 1))); !errors.Is(err, stream.PolicyViolation) {
		t.Fatalf("%d levels: %v, want a policy violation", maxDepth+1, err)
	}
}

// TestOversizedStanzaEndsSession: after the handshake a server sends a
// 64 MiB IQ. The component reads at most DefaultMaxStanza of it, sends a
// policy-violation stream error, ends the connection and reconnects; what
// it allocated meanwhile stays far below the stanza's size. A stanza just
// under the limit is still served.
func TestOversizedStanzaEndsSession(t *testing.T) {
	srv := newComponentServer(t, "s3cret")
	c := newTestComponent(srv.ln.Addr().String(), "s3cret")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	conn := srv.next(t, "connection")
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))

	// Just under the limit: served.
	fill := strings.Repeat("a", DefaultMaxStanza-200)
	fmt.Fprintf(conn, `<iq type='get' id='near' from='localhost' to='relay.test'><ping xmlns='urn:xmpp:ping'>%s</ping></iq>`, fill)
	start, err := nextStart(conn.dec)
	if err != nil {
		t.Fatalf("no answer to a stanza under the limit: %v", err)
	}
	if iq, _ := stanza.NewIQ(start); iq.ID != "near" || iq.Type != stanza.ResultIQ {
		t.Fatalf("answer to a stanza under the limit: %+v", iq)
	}

	const size = 64 << 20
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	// The server reads what comes back while it writes.
	got := make(chan string, 1)
	go func() {
		for {
			start, err := nextStart(conn.dec)
			if err != nil {
				got <- "read: " + err.Error()
				return
			}
			if start.Name.Space == "urn:ietf:params:xml:ns:xmpp-streams" {
				got <- start.Name.Local
				return
			}
		}
	}()
	sent := 0
	if _, err := io.WriteString(conn, `<iq type='set' id='big' from='localhost' to='relay.test'><query xmlns='http://jabber.org/protocol/jinglenodes#channel'>`); err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("A"), 64<<10)
	for sent < size {
		n, err := conn.Write(chunk)
		sent += n
		if err != nil {
			break // relayd closed the connection
		}
	}
	select {
	case cond := <-got:
		if cond != "policy-violation" {
			t.Fatalf("stream error %q, want policy-violation (session: %+v)", cond, c.Status())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("no stream error")
	}
	// The session comes back on its own.
	second := srv.next(t, "reconnection")
	defer second.Close()
	runtime.ReadMemStats(&after)
	if st := c.Status(); !strings.Contains(st.LastError, "policy-violation") {
		t.Errorf("last error %q, want the policy violation", st.LastError)
	}
	alloc := after.TotalAlloc - before.TotalAlloc
	t.Logf("server sent %d of %d bytes before the connection ended; allocated meanwhile %.1f MiB; heap in use %.1f → %.1f MiB",
		sent, size, float64(alloc)/(1<<20), float64(before.HeapInuse)/(1<<20), float64(after.HeapInuse)/(1<<20))
	if alloc > 16<<20 {
		t.Errorf("allocated %.1f MiB while refusing a 64 MiB stanza, want < 16 MiB", float64(alloc)/(1<<20))
	}
	if sent >= size {
		t.Errorf("the whole %d byte stanza was accepted", size)
	}
}

// TestScannerTokensMatchDecoder cross-checks the scanner's idea of a
// top-level element with encoding/xml's: across a stream with restarts,
// the scanner resets exactly where the decoder returns to depth 1.
func TestScannerTokensMatchDecoder(t *testing.T) {
	doc := `<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>` +
		`<message to='a@b' type="chat"><body>hi &gt; there</body><x a='1>2'/></message>  ` +
		`<presence/><iq id='1' type='result'><query xmlns='jabber:iq:roster'><item jid='c@d'/></query></iq>`
	d := xml.NewDecoder(strings.NewReader(doc))
	var ends []int64 // decoder offsets where a top-level element ends
	depth := 0
	for {
		tok, err := d.RawToken()
		if err != nil {
			break
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
			if depth == 1 {
				ends = append(ends, d.InputOffset())
			}
		}
	}
	s := stanzaScanner{max: 1 << 20}
	var resets []int64
	for i := range len(doc) {
		s.feed([]byte{doc[i]})
		if s.count == 0 && s.depth == 1 && s.state == stText && doc[i] == '>' && i > 0 {
			resets = append(resets, int64(i+1))
		}
	}
	// The scanner also resets after the stream header and after each
	// empty top-level element (<presence/>), which RawToken reports as
	// start and end at the same offset.
	want := map[int64]bool{}
	for _, e := range ends {
		want[e] = true
	}
	for _, e := range ends {
		found := false
		for _, r := range resets {
			found = found || r == e
		}
		if !found {
			t.Errorf("decoder ends a top-level element at %d; scanner resets at %v", e, resets)
		}
	}
}
