package harness

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/jnrelay/jnrelay/config"
)

// TestPlaceFiles: a test server's CA named from its own directory ends up
// in the configuration's directory, where relayd's rule lets it be read.
func TestPlaceFiles(t *testing.T) {
	srvDir, dir := t.TempDir(), t.TempDir()
	pki, err := writeTestPKI(srvDir, "localhost")
	if err != nil {
		t.Fatal(err)
	}
	ca := pki.CAFile
	pw := filepath.Join(srvDir, "pw")
	if err := os.WriteFile(pw, []byte("secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m := map[string]any{"xmpp": []any{map[string]any{"type": "client", "jid": "a@localhost", "password_file": pw, "ca_file": ca}}}
	if err := placeFiles(dir, m); err != nil {
		t.Fatal(err)
	}
	svc := m["xmpp"].([]any)[0].(map[string]any)
	cfgPath := filepath.Join(dir, "relayd.json")
	for key, kind := range map[string]config.FileKind{"password_file": config.KindSecret, "ca_file": config.KindCertificate} {
		name, _ := svc[key].(string)
		if _, err := config.ReadFile(cfgPath, name, kind); err != nil {
			t.Errorf("%s %q: %v", key, name, err)
		}
	}
}
