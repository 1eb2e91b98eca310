package turn

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/jnrelay/jnrelay/internal/atomicfile"
)

// SecretFile is the name of the generated shared secret in relayd's state
// directory.
const SecretFile = "turn-secret"

// LoadOrCreateSecret returns the shared secret kept in stateDir, creating
// it (32 random bytes, written as 64 hex digits, mode 0600) when there is
// none. The hex text itself is the secret, as coturn's static-auth-secret
// and TURN REST tooling take a string. It is never logged.
func LoadOrCreateSecret(stateDir string) ([]byte, error) {
	if stateDir == "" {
		return nil, errors.New("turn secret: no state directory to keep it in (set turn.secret or turn.secret_file)")
	}
	path := filepath.Join(stateDir, SecretFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		secret := bytes.TrimSpace(data)
		if len(secret) < 16 {
			return nil, fmt.Errorf("turn secret %s: shorter than 16 bytes", path)
		}
		return secret, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("turn secret: %w", err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("turn secret: %w", err)
	}
	secret := []byte(hex.EncodeToString(raw))
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("turn secret: %w", err)
	}
	if err := atomicfile.Write(path, append(secret, '\n'), 0o600, -1, -1); err != nil {
		return nil, fmt.Errorf("turn secret: %w", err)
	}
	return secret, nil
}
