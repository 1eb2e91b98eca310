package provision

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/internal/atomicfile"
)

// ErrInvalidFile marks a Load whose file exists but does not hold a valid
// configuration; the ETag of its bytes is still returned with it.
var ErrInvalidFile = errors.New("configuration file is not valid")

// LastGoodSuffix is appended to the configuration path to name the copy of
// the previous valid file that Save keeps.
const LastGoodSuffix = config.LastGoodSuffix

// Store is the configuration file on disk. Save replaces it atomically
// (temporary file in the same directory, fsync, rename, fsync of the
// directory), so after a crash or power cut the path holds either the old
// or the new document, never a mix; the previous file is kept as
// <path>.last-good when it was valid. A Store serialises its own Loads and
// Saves; it assumes no other process writes the file at the same time.
type Store struct {
	path string

	mu      sync.Mutex
	cleaned bool // stale temporary files removed
}

// NewStore returns the store of the configuration file at path (made
// absolute). Nothing is read or written until Load or Save.
func NewStore(path string) *Store {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return &Store{path: path}
}

// Path is the configuration file's path, absolute. The files a
// configuration names are read from its directory (config.ReadFile).
func (s *Store) Path() string { return s.path }

// ETag returns the entity tag of a file's bytes: the quoted hex SHA-256.
func ETag(data []byte) string {
	sum := sha256.Sum256(data)
	return `"` + hex.EncodeToString(sum[:]) + `"`
}

// Load reads and validates the configuration file and returns it with the
// ETag of its bytes. A file that exists but is invalid returns its ETag and
// an error wrapping ErrInvalidFile; a missing file returns an error
// wrapping fs.ErrNotExist.
func (s *Store) Load() (config.Config, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return loadFile(s.path, s.path)
}

// LoadLastGood reads the copy of the previous valid file that Save keeps,
// for a start-up that finds the main file invalid.
func (s *Store) LoadLastGood() (config.Config, string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return loadFile(s.path+LastGoodSuffix, s.path)
}

// loadFile reads the file at path as the configuration at cfgPath (the
// last-good copy names files as the configuration does).
func loadFile(path, cfgPath string) (config.Config, string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return config.Config{}, "", fmt.Errorf("read configuration: %w", err)
	}
	cfg, err := config.ParseAt(bytes.NewReader(data), cfgPath)
	if err != nil {
		return config.Config{}, ETag(data), fmt.Errorf("configuration %s: %w: %w", path, ErrInvalidFile, err)
	}
	return cfg, ETag(data), nil
}

// encodeConfig is the on-disk form: indented JSON, no HTML escaping, one
// trailing newline.
func encodeConfig(cfg config.Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("encode configuration: %w", err)
	}
	return buf.Bytes(), nil
}

// sameConfig reports whether two validated configurations are the same
// document.
func sameConfig(a, b config.Config) bool {
	ea, err1 := encodeConfig(a)
	eb, err2 := encodeConfig(b)
	return err1 == nil && err2 == nil && bytes.Equal(ea, eb)
}

// Save writes cfg and returns the ETag of the file now on disk. The
// document is checked first exactly as relayd will read it (config.ParseAt),
// so the file is never replaced by something relayd cannot start from.
// When the file already holds the same configuration nothing is written
// (flash wear) and its current ETag is returned. Otherwise the previous
// file, if valid, becomes <path>.last-good (atomically, by a hard link
// where the filesystem has them), then the new bytes replace the file.
func (s *Store) Save(cfg config.Config) (string, error) {
	data, err := encodeConfig(cfg)
	if err != nil {
		return "", err
	}
	next, err := config.ParseAt(bytes.NewReader(data), s.path)
	if err != nil {
		return "", fmt.Errorf("refusing to save an invalid configuration: %w", err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	path := s.path
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real // keep a symlinked configuration a symlink
	}
	if !s.cleaned {
		removeTemps(path)
		s.cleaned = true
	}

	perm, uid, gid := fs.FileMode(0o600), -1, -1
	old, err := os.ReadFile(path)
	switch {
	case err == nil:
		if bytes.Equal(old, data) {
			return ETag(old), nil
		}
		if fi, err := os.Stat(path); err == nil {
			perm = fileMode(fi.Mode())
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && os.Geteuid() == 0 {
				uid, gid = int(st.Uid), int(st.Gid)
			}
		}
		if prev, perr := config.ParseAt(bytes.NewReader(old), s.path); perr == nil {
			if sameConfig(prev, next) {
				return ETag(old), nil
			}
			if err := keepLastGood(path, old, perm); err != nil {
				return "", err
			}
		}
	case errors.Is(err, fs.ErrNotExist):
	default:
		return "", fmt.Errorf("read configuration: %w", err)
	}
	if err := atomicfile.Write(path, data, perm, uid, gid); err != nil {
		return "", fmt.Errorf("save configuration: %w", err)
	}
	// A last-good copy left from before (wider, or kept while the file
	// was invalid) is narrowed too.
	if err := os.Chmod(path+LastGoodSuffix, perm); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("save configuration: last good copy: %w", err)
	}
	return ETag(data), nil
}

// fileMode is the mode the configuration file and its last-good copy are
// written with, whatever mode the file had: 0600, or 0640 when the file was
// group-readable (the packaged layout, jnrelay:jnrelay 0640). Others never
// read it and nobody but its owner writes it: it holds secrets.
func fileMode(old fs.FileMode) fs.FileMode { return 0o600 | old.Perm()&0o040 }

// keepLastGood makes the current file (whose bytes are old) the
// last-known-good copy, mode perm: a hard link renamed into place, or,
// where links are not supported, an atomic write of the bytes. The
// directory is synced by the atomicfile.Write that follows.
func keepLastGood(path string, old []byte, perm fs.FileMode) error {
	dst := path + LastGoodSuffix
	if a, err := os.Stat(path); err == nil {
		if b, err := os.Stat(dst); err == nil && os.SameFile(a, b) {
			// Already is (a writer was stopped right after linking).
			if err := os.Chmod(dst, perm); err != nil {
				return fmt.Errorf("keep last good configuration: %w", err)
			}
			return nil
		}
	}
	tmp := atomicfile.TempName(dst)
	if err := os.Link(path, tmp); err == nil {
		// The link shares the old file's inode and mode: narrow it
		// before it becomes the last-good copy (the old name is
		// replaced right after).
		if err := os.Chmod(tmp, perm); err != nil {
			_ = os.Remove(tmp)
			return fmt.Errorf("keep last good configuration: %w", err)
		}
		err := os.Rename(tmp, dst)
		_ = os.Remove(tmp) // left behind if rename found the same file (POSIX: a no-op)
		if err != nil {
			return fmt.Errorf("keep last good configuration: %w", err)
		}
		return nil
	}
	if err := atomicfile.Write(dst, old, perm, -1, -1); err != nil {
		return fmt.Errorf("keep last good configuration: %w", err)
	}
	return nil
}

// removeTemps deletes temporary files a killed writer left behind.
func removeTemps(path string) {
	atomicfile.RemoveTemps(path)
	atomicfile.RemoveTemps(path + LastGoodSuffix)
}
