package turn

import "testing"

// FuzzUnauthenticated feeds arbitrary datagrams to the parsers relayd
// runs on the TURN port around pion: they must never panic; nothing that
// is not a STUN request is unauthenticated, nothing that is not a STUN
// response is an unprotected answer, and nothing is both.
func FuzzUnauthenticated(f *testing.F) {
	f.Add(stunRequest(0x0003, 0x0019))
	f.Add(stunRequest(0x0003, 0x0019, 0x0008))
	f.Add(stunRequest(0x0016, 0x0012))
	f.Add([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4})
	f.Add(append(stunRequest(0x0001), 0x00, 0x08, 0xff, 0xff))
	f.Add(stunRequest(0x0113, 0x0009, 0x0015, 0x0014))
	f.Add(stunRequest(0x0101, 0x0020, 0x0008))
	f.Add(forgedIntegrityAllocate(1))
	f.Fuzz(func(t *testing.T, b []byte) {
		if unauthenticated(b) && (len(b) < 20 || b[0]>>6 != 0 || (uint16(b[0])<<8|uint16(b[1]))&0x0110 != 0) {
			t.Fatalf("%x: not a STUN request, yet unauthenticated", b)
		}
		if unprotectedAnswer(b) && (len(b) < 20 || b[0]>>6 != 0 || b[0]&0x01 == 0) {
			t.Fatalf("%x: not a STUN response, yet an unprotected answer", b)
		}
		if unauthenticated(b) && unprotectedAnswer(b) {
			t.Fatalf("%x: both a request and an answer", b)
		}
	})
}

// FuzzParseUsername: any username parses without panicking, and what
// parses has an id and a positive expiry.
func FuzzParseUsername(f *testing.F) {
	for _, s := range []string{"1900000000:abc", "", ":", "1:", "x:y", "99999999999999999999:a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		exp, id, ok := parseUsername(s)
		if ok && (id == "" || exp.Unix() <= 0) {
			t.Fatalf("%q parsed as %v %q", s, exp, id)
		}
	})
}
