// Package atomicfile replaces files so that a power cut or a kill leaves
// either the old or the new content, never a torn file: write a temporary
// file beside the target, fsync it, rename it over the target, fsync the
// directory.
package atomicfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// MaxPerm bounds the mode of every file Write creates: configuration and
// state hold secrets or the donor's usage, so nobody but the owner writes
// them, others never read them, and only the owner's group may.
const MaxPerm fs.FileMode = 0o640

// Write replaces path with data: a temporary file in the same directory
// (mode perm within MaxPerm, whatever mode the file had before; owner
// uid:gid when not -1), written and fsynced, renamed over path, then the
// directory fsynced so the rename survives a power cut.
func Write(path string, data []byte, perm fs.FileMode, uid, gid int) (err error) {
	perm = perm.Perm() & MaxPerm
	tmp := TempName(path)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(tmp)
		}
	}()
	if uid >= 0 || gid >= 0 {
		if err := f.Chown(uid, gid); err != nil {
			return fmt.Errorf("chown %s: %w", tmp, err)
		}
	}
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("chmod %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("rename into place: %w", err)
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs a directory (so a rename in it is durable).
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// TempName is a fresh temporary name beside path, matched by TempGlob.
func TempName(path string) string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (Go 1.24+)
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-"+hex.EncodeToString(b[:]))
}

// TempGlob matches the temporary files Write uses for path.
func TempGlob(path string) string {
	return filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
}

// RemoveTemps deletes temporary files a killed writer left behind for
// path. A concurrent writer whose temporary file disappears fails its
// rename; it never renames a partial file.
func RemoveTemps(path string) {
	matches, _ := filepath.Glob(TempGlob(path))
	for _, m := range matches {
		_ = os.Remove(m)
	}
}
