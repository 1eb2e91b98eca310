//go:build !linux

package provision

import (
	"errors"
	"net"
)

// peerCredentials is Linux-only (SO_PEERCRED); elsewhere unix-socket
// callers are never authorised. The Client works everywhere.
func peerCredentials(*net.UnixConn) (uid, gid uint32, groups []uint32, err error) {
	return 0, 0, nil, errors.New("peer credentials are only available on Linux")
}
