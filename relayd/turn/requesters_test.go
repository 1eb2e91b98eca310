package turn

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	pionturn "github.com/pion/turn/v5"
	"mellium.im/xmpp/jid"
)

func TestRequestersBoundedAndAnonymous(t *testing.T) {
	r := NewRequesters(3)
	now := time.Now()
	for i := range 3 {
		r.Record("id"+strconv.Itoa(i), jid.MustParse("u"+strconv.Itoa(i)+"@example.org/res"), now.Add(time.Duration(i+1)*time.Hour))
	}
	r.Record("id3", jid.MustParse("u3@example.org"), now.Add(10*time.Hour))
	if r.Len() != 3 {
		t.Fatalf("%d ids held, want the bound 3", r.Len())
	}
	if _, ok := r.Lookup("id0"); ok {
		t.Fatal("the id expiring first was kept")
	}
	if got := r.requesterFor("id1"); got.String() != "u1@example.org" {
		t.Fatalf("id1 counts as %s, want the bare JID it was minted for", got)
	}
	if got := r.requesterFor("tooling"); got.String() != "tooling@"+anonymousDomain {
		t.Fatalf("an unknown id counts as %s", got)
	}
	if got := r.requesterFor("a@b/c"); got.Domainpart() != anonymousDomain {
		t.Fatalf("an id that is no localpart counts as %s", got)
	}
}

func TestSecretCreatedOnceOwnerOnly(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	s1, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(dir, SecretFile))
	if err != nil || fi.Mode().Perm() != 0o600 || len(s1) != 64 {
		t.Fatalf("secret file %v (%v), %d bytes", fi.Mode(), err, len(s1))
	}
	s2, err := LoadOrCreateSecret(dir)
	if err != nil || string(s1) != string(s2) {
		t.Fatalf("secret changed across loads (%v)", err)
	}
	if _, err := LoadOrCreateSecret(""); err == nil {
		t.Fatal("secret without a state directory")
	}
}

func TestCredentials(t *testing.T) {
	exp := time.Unix(1_900_000_000, 0)
	u := Username(exp, "abc")
	got, id, ok := parseUsername(u)
	if u != "1900000000:abc" || !ok || id != "abc" || !got.Equal(exp) {
		t.Fatalf("%q parsed as %v %q %v", u, got, id, ok)
	}
	for _, bad := range []string{"", "abc", "123", "123:", "x:abc", "-5:abc"} {
		if _, _, ok := parseUsername(bad); ok {
			t.Errorf("%q accepted", bad)
		}
	}
	// The same password as pion's own TURN REST handler derives.
	_, key, ok := pionturn.LongTermTURNRESTAuthHandler("s3cret", nil)(&pionturn.RequestAttributes{Username: u, Realm: "r"})
	if want := pionturn.GenerateAuthKey(u, "r", Password([]byte("s3cret"), u)); !ok || !bytes.Equal(key, want) {
		t.Fatal("password differs from pion's TURN REST derivation")
	}
}
