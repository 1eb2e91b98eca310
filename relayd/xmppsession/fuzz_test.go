package xmppsession

import (
	"errors"
	"testing"

	"mellium.im/xmpp/stream"
)

// FuzzStanzaScanner feeds the incoming-stanza cap arbitrary bytes, whole
// and in the chunks the fuzzer chooses: it never panics, never lets more
// than the cap through, refuses only with a policy-violation, and judges
// a stream the same however it is cut into reads.
func FuzzStanzaScanner(f *testing.F) {
	f.Add([]byte(`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept'><iq id='1'><x a='>'/></iq>`), uint8(7))
	f.Add([]byte(`<stream:stream><m><![CDATA[</m>]]><!-- </m> --></m><n/>`), uint8(3))
	f.Add([]byte(`<a><b><c><d><e><f><g></g></f></e></d></c></b></a>`), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		const max = 64
		whole := stanzaScanner{max: max}
		n, err := whole.feed(data)
		if err == nil && n != len(data) || err != nil && (n > len(data) || !errors.Is(err, stream.PolicyViolation)) {
			t.Fatalf("feed: %d of %d bytes, err %v", n, len(data), err)
		}
		cut := stanzaScanner{max: max}
		step := int(chunk%16) + 1
		var cerr error
		for i := 0; i < len(data) && cerr == nil; i += step {
			_, cerr = cut.feed(data[i:min(i+step, len(data))])
		}
		if (err == nil) != (cerr == nil) {
			t.Fatalf("whole: %v, in chunks of %d: %v", err, step, cerr)
		}
	})
}
