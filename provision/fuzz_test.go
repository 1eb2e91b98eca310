package provision

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
)

// FuzzPatch drives the PATCH path — merge patch over the current document,
// strict decode naming keys, unredaction, validation — with arbitrary
// bodies. It must never panic; every refusal is a 400 error document with
// a code; every accepted result decodes back to itself, is saved only if
// relayd would load it, and applying the same patch again changes nothing
// (RFC 7386 patches are idempotent).
func FuzzPatch(f *testing.F) {
	cur := mustParse(f, baseDoc)
	f.Add([]byte(`{"channel": {"max_kbps": 500}}`))
	f.Fuzz(func(t *testing.T, patch []byte) {
		if len(patch) > MaxBody {
			return
		}
		next, e := patchConfig(cur, patch)
		if e != nil {
			if e.Status != http.StatusBadRequest || e.Code == "" || e.Message == "" {
				t.Fatalf("bad refusal %+v", e)
			}
			for _, fe := range e.Fields {
				if fe.Message == "" {
					t.Fatalf("field error without message: %+v", e)
				}
			}
			return
		}
		// Idempotence at the JSON level.
		p, _ := parseJSON(patch)
		once, err := configValue(cur)
		if err != nil {
			t.Fatal(err)
		}
		once = mergePatch(once, p)
		a, _ := json.Marshal(once)
		p2, _ := parseJSON(patch)
		twice := mergePatch(once, p2)
		b, _ := json.Marshal(twice)
		if !bytes.Equal(a, b) {
			t.Fatalf("patch not idempotent:\n%s\n%s", a, b)
		}
		// The decoded result survives its own encoding.
		enc, err := json.Marshal(next)
		if err != nil {
			t.Fatal(err)
		}
		again, e2 := documentConfig(enc)
		if e2 != nil {
			t.Fatalf("re-decode: %v", e2)
		}
		if enc2, _ := json.Marshal(again); !bytes.Equal(enc, enc2) {
			t.Fatalf("re-decode differs:\n%s\n%s", enc, enc2)
		}
		// Valid results are what Store.Save writes and relayd loads.
		full := Unredact(next, cur)
		if len(unresolvedPlaceholders(full, cur)) == 0 && full.Validate() == nil {
			data, err := encodeConfig(full)
			if err != nil {
				t.Fatal(err)
			}
			if _, e := documentConfig(data); e != nil {
				t.Fatalf("saved form refused: %v", e)
			}
		}
	})
}
