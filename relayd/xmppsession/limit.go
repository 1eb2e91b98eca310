package xmppsession

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"sync/atomic"

	"mellium.im/xmpp/stream"
)

// DefaultMaxStanza is the largest incoming stanza a session accepts, in
// bytes of XML as received (after TLS). A Jingle Nodes IQ is well under a
// few KiB; XMPP servers cap stanzas too, but relayd does not rely on the
// server it talks to: encoding/xml holds a whole text node or attribute
// value in memory, so without a cap one 64 MiB stanza cost relayd about
// 200 MB. 1 MiB is above what servers forward by default (Prosody: 256 KiB
// from clients, 512 KiB from other servers), so a stanza from a remote
// server that its own server let through does not end the session: relayd
// refuses it alone (bad-request); one over 1 MiB costs a reconnection.
const DefaultMaxStanza = 1 << 20

// maxDepth caps how deep elements nest inside one stanza: the decoder
// keeps a record per open element, about 200 bytes, so 100,000 levels in
// 700 KB cost relayd 20 MB. Stanzas relayd handles nest a few levels deep;
// 1,024 levels cost 200 KB and leave room for whatever a server forwards.
const maxDepth = 1024

// limitedConn is a connection whose incoming XML stream is measured as it
// is read: a top-level element of the stream (a stanza, or stream
// features, TLS or SASL negotiation) or a run of text between them longer
// than max bytes fails the read with a policy-violation stream error.
// mellium's Serve sends a stream error it reads back to the server and
// ends the session, and Run reconnects.
//
// The scanner follows only what it needs to find element boundaries:
// tags, quoted attribute values, end tags, "<?...?>", comments, CDATA
// sections; a "stream" start tag (a stream restart after TLS or SASL)
// sets the depth back to 1, as the server never closes the old stream.
type limitedConn struct {
	net.Conn
	scan stanzaScanner
	// passThrough stops the scan: set on a plain connection once STARTTLS
	// hands it to TLS (the scan goes on inside TLS, on a second
	// limitedConn).
	passThrough atomic.Bool
	// violated is set once the scan failed (scan belongs to the reader);
	// errSent once the stream error went out.
	violated, errSent atomic.Bool
}

func newLimitedConn(c net.Conn, max int) *limitedConn {
	if max <= 0 {
		max = DefaultMaxStanza
	}
	return &limitedConn{Conn: c, scan: stanzaScanner{max: max}}
}

func (c *limitedConn) Read(p []byte) (int, error) {
	if c.passThrough.Load() {
		return c.Conn.Read(p)
	}
	if c.scan.err != nil {
		return 0, c.scan.err
	}
	n, err := c.Conn.Read(p)
	if k, serr := c.scan.feed(p[:n]); serr != nil {
		c.violated.Store(true)
		return k, serr
	}
	return n, err
}

// closeStream is how mellium ends its output stream (one Write).
const closeStream = "</stream:stream>"

// Write passes p on; once the scan failed, the stream's closing tag goes
// out after the policy-violation stream error. mellium's Serve encodes the
// stream error it got from Read but does not flush it before writing the
// closing tag straight to the connection (v0.23.0), so the server would
// see a stream closed without a reason.
func (c *limitedConn) Write(p []byte) (int, error) {
	if c.violated.Load() && string(p) == closeStream && c.errSent.CompareAndSwap(false, true) {
		se := fmt.Sprintf("<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"+
			"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>stanza over %d bytes</text></stream:error>", c.scan.max)
		if _, err := io.WriteString(c.Conn, se); err != nil {
			return 0, fmt.Errorf("send stream error: %w", err)
		}
	}
	return c.Conn.Write(p)
}

// ConnectionState is the TLS connection state (channel binding) of a
// wrapped TLS connection.
func (c *limitedConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(interface{ ConnectionState() tls.ConnectionState }); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

// scanner states.
const (
	stText    = iota // character data
	stOpen           // after '<'
	stName           // in a start tag's name
	stAttrs          // in a start tag after its name
	stQuote          // in a quoted attribute value
	stEmpty          // after '/' in a start tag
	stEndTag         // in an end tag
	stPI             // in <? ... ?>
	stBang           // after "<!"
	stComment        // in <!-- ... -->
	stCDATA          // in <![CDATA[ ... ]]>
	stDecl           // in another <! ... >
)

type stanzaScanner struct {
	max   int
	count int // bytes of the current top-level element or text run
	depth int // 0 before the stream header, 1 between stanzas
	state int
	quote byte
	name  [16]byte // the start tag's name, up to its first 16 bytes
	nlen  int
	bang  [7]byte // what follows "<!", up to "[CDATA["
	blen  int
	last2 [2]byte // the two bytes before the current one, for terminators
	err   error
}

// feed scans b; it returns how many bytes of b are within the limit and
// the error once an element or text run passes it.
func (s *stanzaScanner) feed(b []byte) (int, error) {
	for i, c := range b {
		s.count++
		if s.count > s.max {
			s.err = fmt.Errorf("incoming XML element over %d bytes: %w", s.max, stream.PolicyViolation)
			return i, s.err
		}
		s.step(c)
		if s.depth > maxDepth+1 { // +1: the stream element
			s.err = fmt.Errorf("incoming XML elements nested over %d deep: %w", maxDepth, stream.PolicyViolation)
			return i, s.err
		}
		s.last2[0], s.last2[1] = s.last2[1], c
	}
	return len(b), nil
}

// boundary starts counting a new top-level element or text run.
func (s *stanzaScanner) boundary() { s.count = 0 }

func (s *stanzaScanner) step(c byte) {
	switch s.state {
	case stText:
		if c == '<' {
			if s.depth <= 1 {
				// A text run between stanzas (whitespace keepalives)
				// ends; the next element starts with this byte.
				s.boundary()
				s.count = 1
			}
			s.state = stOpen
		}
	case stOpen:
		switch c {
		case '/':
			s.state = stEndTag
		case '?':
			s.state = stPI
		case '!':
			s.state, s.blen = stBang, 0
		default:
			s.state, s.nlen = stName, 0
			s.addName(c)
		}
	case stName:
		switch c {
		case '>':
			s.openTag()
		case '/':
			s.state = stEmpty
		case ' ', '\t', '\r', '\n':
			s.state = stAttrs
		default:
			s.addName(c)
		}
	case stAttrs:
		switch c {
		case '"', '\'':
			s.state, s.quote = stQuote, c
		case '/':
			s.state = stEmpty
		case '>':
			s.openTag()
		}
	case stQuote:
		if c == s.quote {
			s.state = stAttrs
		}
	case stEmpty:
		if c == '>' {
			s.state = stText
			if s.depth <= 1 {
				s.boundary() // an empty top-level element ended
			}
		} else {
			s.state = stAttrs
		}
	case stEndTag:
		if c == '>' {
			s.state = stText
			if s.depth > 0 {
				s.depth--
			}
			if s.depth <= 1 {
				s.boundary() // a stanza (or the stream) ended
			}
		}
	case stPI:
		if c == '>' && s.last2[1] == '?' {
			s.state = stText
		}
	case stBang:
		s.bang[s.blen] = c
		s.blen++
		switch {
		case s.blen == 2 && string(s.bang[:2]) == "--":
			s.state = stComment
		case s.blen == 7 && string(s.bang[:7]) == "[CDATA[":
			s.state = stCDATA
		case c == '>':
			s.state = stText
		case s.blen == len(s.bang) || (s.bang[0] != '-' && s.bang[0] != '[') || (s.blen == 2 && s.bang[0] == '-'):
			s.state = stDecl
		}
	case stComment:
		if c == '>' && s.last2 == [2]byte{'-', '-'} {
			s.state = stText
		}
	case stCDATA:
		if c == '>' && s.last2 == [2]byte{']', ']'} {
			s.state = stText
		}
	case stDecl:
		if c == '>' {
			s.state = stText
		}
	}
}

func (s *stanzaScanner) addName(c byte) {
	if s.nlen < len(s.name) {
		s.name[s.nlen] = c
	}
	s.nlen++
}

// openTag ends a start tag that opens an element.
func (s *stanzaScanner) openTag() {
	s.state = stText
	n := string(s.name[:min(s.nlen, len(s.name))])
	if s.nlen <= len(s.name) && (n == "stream" || (len(n) > 7 && n[len(n)-7:] == ":stream")) {
		s.depth = 1 // a stream header, first or restarted
		s.boundary()
		return
	}
	s.depth++
}
