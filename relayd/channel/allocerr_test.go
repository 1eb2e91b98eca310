package channel

import (
	"errors"
	"fmt"
	"syscall"
	"testing"
)

func TestOutOfResources(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{syscall.EMFILE, true},
		{syscall.ENFILE, true},
		{syscall.ENOBUFS, true},
		{syscall.ENOMEM, true},
		{fmt.Errorf("allocate channel: bind relay port 40000: %w", syscall.EMFILE), true},
		{fmt.Errorf("allocate channel: %w", fmt.Errorf("udp socket: %w", syscall.ENOBUFS)), true},
		{nil, false},
		{ErrPoolExhausted, false},
		{ErrDraining, false},
		{syscall.EADDRINUSE, false},
		{syscall.EACCES, false},
		{errors.New("too many open files"), false}, // the text alone proves nothing
	} {
		if got := OutOfResources(tc.err); got != tc.want {
			t.Errorf("OutOfResources(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}
