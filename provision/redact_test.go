package provision

import (
	"github.com/jnrelay/jnrelay/config"
	"strings"
	"testing"
)

func TestRedactUnredact(t *testing.T) {
	cur := mustParse(t, baseDoc)
	red := Redact(cur)
	if red.XMPP[0].Secret != Placeholder || red.XMPP[1].Password != Placeholder || red.TURN.Secret != Placeholder {
		t.Fatalf("not redacted: %+v %+v", red.XMPP, red.TURN)
	}
	if cur.XMPP[0].Secret != "component-secret" {
		t.Fatal("Redact modified its argument")
	}
	back := Unredact(red, cur)
	if !sameConfig(back, cur) {
		t.Fatalf("round trip lost something: %+v", back)
	}
	if red.XMPP[0].Secret != Placeholder {
		t.Fatal("Unredact modified its argument")
	}

	// Empty secrets (a secret_file instead) stay empty.
	noSecret := cur
	noSecret.TURN.Secret = ""
	if Redact(noSecret).TURN.Secret != "" {
		t.Fatal("empty secret redacted to a placeholder")
	}

	// Matched by name, not position: reordered entries keep their own.
	swapped := red
	swapped.XMPP = []config.Service{red.XMPP[1], red.XMPP[0]}
	back = Unredact(swapped, cur)
	if back.XMPP[0].Password != "account-password" || back.XMPP[1].Secret != "component-secret" {
		t.Fatalf("reordered: %+v", back.XMPP)
	}

	// A new value replaces; a renamed service's placeholder is unresolved.
	edited := red
	edited.XMPP = append([]config.Service(nil), red.XMPP...)
	edited.XMPP[0].Secret = "new-secret"
	edited.XMPP[1].Name = "renamed"
	back = Unredact(edited, cur)
	if back.XMPP[0].Secret != "new-secret" || back.XMPP[1].Password != Placeholder || back.TURN.Secret != "turn-secret" {
		t.Fatalf("edited: %+v", back)
	}
	fields := unresolvedPlaceholders(back, cur)
	if len(fields) != 1 || fields[0].Field != "xmpp[1].password" || !strings.Contains(fields[0].Message, "renamed") {
		t.Fatalf("unresolved: %+v", fields)
	}

	// Services named by default (domain / JID) match too.
	anon := mustParse(t, strings.NewReplacer(`"name": "provider", `, "", `"name": "donor", `, "").Replace(baseDoc))
	r := Redact(anon)
	r.XMPP[0].Name, r.XMPP[1].Name = "", ""
	back = Unredact(r, anon)
	if back.XMPP[0].Secret != "component-secret" || back.XMPP[1].Password != "account-password" {
		t.Fatalf("default names: %+v", back.XMPP)
	}
}
