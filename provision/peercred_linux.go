package provision

import (
	"errors"
	"fmt"
	"net"
	"unsafe"

	"golang.org/x/sys/unix"
)

// peerCredentials reads who is at the other end of a unix socket: uid and
// primary gid from SO_PEERCRED and the supplementary groups from
// SO_PEERGROUPS (Linux 4.13+; without it only the primary gid counts). The
// kernel records them when the peer connected, so they cannot be changed
// afterwards by the peer.
func peerCredentials(c *net.UnixConn) (uid, gid uint32, groups []uint32, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, nil, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var credErr, groupsErr error
	err = raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
		if credErr == nil {
			groups, groupsErr = peerGroups(int(fd))
		}
	})
	if err == nil {
		err = credErr
	}
	if err != nil {
		return 0, 0, nil, fmt.Errorf("peer credentials: SO_PEERCRED: %w", err)
	}
	if groupsErr != nil && !errors.Is(groupsErr, unix.ENOPROTOOPT) {
		return 0, 0, nil, fmt.Errorf("peer credentials: SO_PEERGROUPS: %w", groupsErr)
	}
	return cred.Uid, cred.Gid, groups, nil
}

// peerGroups asks SO_PEERGROUPS, growing the buffer once if the peer has
// more groups than the first guess (the kernel answers ERANGE with the
// size it needs; NGROUPS_MAX bounds it).
func peerGroups(fd int) ([]uint32, error) {
	buf := make([]uint32, 64)
	for range 2 {
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == 0:
			return buf[:size/4], nil
		case errno == unix.ERANGE && size/4 > uint32(len(buf)) && size/4 <= 65536:
			buf = make([]uint32, size/4)
		default:
			return nil, errno
		}
	}
	return nil, unix.ERANGE
}
