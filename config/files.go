package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// The files a configuration names (xmpp[].secret_file, password_file,
// ca_file, turn.secret_file, turn.builtin.cert_file and key_file) follow
// one rule, checked by ReadFile both when
// the configuration is validated and whenever relayd reads them:
//
//   - the path is relative to the configuration file's directory or an
//     absolute path directly in it: no subdirectory, no "..", nothing
//     elsewhere; a path outside gets one answer (ErrFileOutside) and the
//     filesystem is not looked at, so nothing is told about other paths;
//   - the name is not the configuration file itself, its last-good copy
//     or any hidden (dot) file, such as the writers' temporary files;
//   - it is a regular file, found without following a symbolic link
//     (lstat, then open with O_NOFOLLOW and the same file checked again by
//     fstat), so no symlink, FIFO, device or directory is ever opened;
//   - at most MaxFileSize bytes, read through a limit;
//   - owned by root or by relayd's own user, writable by nobody else
//     (no group or world write bit);
//   - a secret (KindSecret) is not world-readable, and group-readable
//     only when its group is root's or relayd's own (root:jnrelay 0640 is
//     the packaged layout); a certificate (KindCertificate: CA
//     certificates, a TLS listener's chain) is public and may be
//     world-readable, its private key is a secret.

// MaxFileSize is the largest file a configuration may name.
const MaxFileSize = 64 << 10

// LastGoodSuffix is appended to the configuration path to name the copy
// of the previous valid file that the provisioning store keeps.
const LastGoodSuffix = ".last-good"

// FileKind says what a named file holds, which decides who may read it.
type FileKind int

const (
	// KindSecret is a password or shared secret.
	KindSecret FileKind = iota
	// KindCertificate is PEM CA certificates: public, so world-readable
	// is fine.
	KindCertificate
)

// ErrFileOutside is the answer for every path outside the configuration's
// directory, whether or not anything is there.
var ErrFileOutside = errors.New("must name a file directly in the configuration file's directory")

// ErrNoConfigDir refuses a named file when the configuration was not read
// from (or is not headed for) a file, so there is no directory to read it
// from.
var ErrNoConfigDir = errors.New("files can only be named by a configuration file (they are read from its directory)")

// ReadFile reads the file name of a configuration stored at configPath,
// under the rule above.
func ReadFile(configPath, name string, kind FileKind) ([]byte, error) {
	path, err := filePath(configPath, name)
	if err != nil {
		return nil, err
	}
	fi, err := os.Lstat(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s does not exist", path)
		}
		return nil, fmt.Errorf("%s: %w", path, errors.Unwrap(err))
	}
	if err := checkFile(fi, kind); err != nil {
		return nil, fmt.Errorf("%s %w", path, err)
	}
	// O_NONBLOCK: a FIFO swapped in after the lstat must not block the
	// open; fstat below refuses it.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK|syscall.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, errors.Unwrap(err))
	}
	defer f.Close()
	opened, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat %s: %w", path, err)
	}
	if !os.SameFile(fi, opened) {
		return nil, fmt.Errorf("%s was replaced while being opened", path)
	}
	if err := checkFile(opened, kind); err != nil {
		return nil, fmt.Errorf("%s %w", path, err)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, MaxFileSize)
	}
	return data, nil
}

// filePath resolves name against the configuration's directory and
// applies the path part of the rule, without touching the filesystem.
func filePath(configPath, name string) (string, error) {
	if configPath == "" {
		return "", ErrNoConfigDir
	}
	if name == "" {
		return "", errors.New("empty path")
	}
	dir := filepath.Dir(filepath.Clean(configPath))
	path := filepath.Clean(name)
	if !filepath.IsAbs(path) {
		path = filepath.Join(dir, path)
	}
	if filepath.Dir(path) != dir {
		return "", fmt.Errorf("%w %s", ErrFileOutside, dir)
	}
	base, conf := filepath.Base(path), filepath.Base(configPath)
	switch {
	case base == conf || base == conf+LastGoodSuffix:
		return "", fmt.Errorf("%s is the configuration itself", path)
	case strings.HasPrefix(base, "."):
		return "", fmt.Errorf("%s is a hidden file", path)
	}
	return path, nil
}

// checkFile applies the type, size, owner and mode parts of the rule.
func checkFile(fi fs.FileInfo, kind FileKind) error {
	switch m := fi.Mode(); {
	case m&fs.ModeSymlink != 0:
		return errors.New("is a symbolic link: name the file itself")
	case !m.IsRegular():
		return errors.New("is not a regular file")
	}
	if fi.Size() > MaxFileSize {
		return fmt.Errorf("is larger than %d bytes", MaxFileSize)
	}
	perm := fi.Mode().Perm()
	if perm&0o022 != 0 {
		return fmt.Errorf("is writable by group or others (mode %04o): chmod go-w", perm)
	}
	if kind == KindSecret && perm&0o004 != 0 {
		return fmt.Errorf("is readable by others (mode %04o): chmod o-r", perm)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if st.Uid != 0 && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("is owned by uid %d, neither root nor relayd's user: chown it", st.Uid)
	}
	if kind == KindSecret && perm&0o040 != 0 && st.Gid != 0 && int(st.Gid) != os.Getegid() {
		return fmt.Errorf("is readable by group %d, neither root's nor relayd's: chmod g-r or chgrp it", st.Gid)
	}
	return nil
}

// readSecret is a secret file's content without its trailing newline;
// an empty secret is an error.
func readSecret(configPath, name string) (string, error) {
	b, err := ReadFile(configPath, name, KindSecret)
	if err != nil {
		return "", err
	}
	secret := strings.TrimRight(string(b), "\r\n")
	if secret == "" {
		return "", errors.New("the file is empty")
	}
	return secret, nil
}

// readCertPool reads a ca_file into a certificate pool.
func readCertPool(configPath, name string) (*x509.CertPool, error) {
	pem, err := ReadFile(configPath, name, KindCertificate)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("holds no PEM certificate")
	}
	return pool, nil
}
