package offload

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// needSockDiag skips a test under qemu-user (make test-cross sets
// JNRELAY_QEMU_USER=1), which does not emulate NETLINK_SOCK_DIAG: the
// broker checks every leg through it. Natively, its absence fails.
func needSockDiag(t testing.TB) {
	t.Helper()
	d, err := openSockDiag()
	if err == nil {
		d.close()
		return
	}
	if errors.Is(err, unix.EPROTONOSUPPORT) && os.Getenv("JNRELAY_QEMU_USER") == "1" {
		t.Skipf("%v: qemu-user does not emulate it", err)
	}
	t.Fatal(err)
}
