package channel

import (
	"errors"
	"syscall"
)

// OutOfResources reports whether err, from Allocate, says the host ran out
// of something a channel needs (file descriptors, socket buffers, kernel
// memory) rather than that the request or the port range was at fault:
// the relay is full for now, and a protocol answers as it does for an
// exhausted pool. The errnos stay here, with the code that opens the
// sockets, so the protocol layers never read system call errors.
func OutOfResources(err error) bool {
	for _, errno := range outOfResourcesErrnos {
		if errors.Is(err, errno) {
			return true
		}
	}
	return false
}

// outOfResourcesErrnos are the errors of socket(2), bind(2) and
// setsockopt(2) that mean the host is out of a resource.
var outOfResourcesErrnos = [...]syscall.Errno{
	syscall.EMFILE,  // the process's open-file limit
	syscall.ENFILE,  // the system's open-file limit
	syscall.ENOBUFS, // no buffer space for the socket
	syscall.ENOMEM,  // no kernel memory
}
