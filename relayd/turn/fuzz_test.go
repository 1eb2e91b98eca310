package turn

import "testing"

// FuzzUnauthenticated feeds arbitrary datagrams to the one parser relayd
// runs on the TURN port before pion: it must never panic, and must call
// nothing unauthenticated that is not a STUN request.
func FuzzUnauthenticated(f *testing.F) {
	f.Add(stunRequest(0x0003, 0x0019))
	f.Add(stunRequest(0x0003, 0x0019, 0x0008))
	f.Add(stunRequest(0x0016, 0x0012))
	f.Add([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4})
	f.Add(append(stunRequest(0x0001), 0x00, 0x08, 0xff, 0xff))
	f.Fuzz(func(t *testing.T, b []byte) {
		if unauthenticated(b) && (len(b) < 20 || b[0]>>6 != 0 || (uint16(b[0])<<8|uint16(b[1]))&0x0110 != 0) {
			t.Fatalf("%x: not a STUN request, yet unauthenticated", b)
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
