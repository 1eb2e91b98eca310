package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/jnrelay/jnrelay/kernel/offload"
)

// runOffloadBroker is relayd -offload-broker SOCKET: the privileged half
// of the fast path (kernel/offload). It holds the kernel table and the
// capabilities for relayd, which keeps none, and serves relayd's user
// only. Under systemd socket activation (relayd-offload.socket) it takes
// the socket systemd passes; otherwise it creates SOCKET, owned by that
// user and the broker's group, mode 0660. It runs until SIGTERM or
// SIGINT.
func runOffloadBroker(socket, who string, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("part", "offload-broker")
	if who == "" {
		fmt.Fprintln(stderr, "relayd: -offload-broker needs -offload-user (relayd's user, name or uid)")
		return 2
	}
	uid, err := lookupUser(who)
	if err != nil {
		fmt.Fprintln(stderr, "relayd: -offload-user:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ln, err := brokerListener(socket, uid, log)
	if err != nil {
		fmt.Fprintln(stderr, "relayd:", err)
		return 1
	}
	log.Info("offload broker listening", "socket", ln.Addr().String(), "uid", uid)
	if err := offload.New(offload.Config{UID: uint32(uid), Logger: log}).Serve(ctx, ln); err != nil {
		log.Error("offload broker stopped", "err", err)
		return 1
	}
	return 0
}

// brokerListener is the socket systemd passed, or socket created for
// uid and the broker's group.
func brokerListener(socket string, uid int, log *slog.Logger) (*net.UnixListener, error) {
	if ln := activatedListener(log); ln != nil {
		ul, ok := ln.(*net.UnixListener)
		if !ok {
			return nil, fmt.Errorf("offload broker: systemd passed a %s listener, want a unix stream socket", ln.Addr().Network())
		}
		return ul, nil
	}
	if err := os.MkdirAll(filepath.Dir(socket), 0o755); err != nil {
		return nil, fmt.Errorf("offload broker socket: %w", err)
	}
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("offload broker socket: %w", err)
	}
	// Created 0660 by the umask, in the broker's group, then given to
	// uid without following a link: no chmod or chown through a path
	// someone could swap. A broker without CAP_CHOWN (OpenWrt's, root
	// with two capabilities) leaves it to its group instead: relayd's.
	old := syscall.Umask(0o117)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: socket, Net: "unix"})
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("offload broker socket: %w", err)
	}
	if err := os.Lchown(socket, uid, -1); errors.Is(err, os.ErrPermission) {
		log.Info("offload broker socket left to the broker's group (no CAP_CHOWN)", "socket", socket, "gid", os.Getegid())
	} else if err != nil {
		ln.Close()
		return nil, fmt.Errorf("offload broker socket: %w", err)
	}
	return ln, nil
}

// lookupUser resolves a user name or uid.
func lookupUser(name string) (int, error) {
	if uid, err := strconv.Atoi(name); err == nil && uid >= 0 {
		return uid, nil
	}
	u, err := user.Lookup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(u.Uid)
}
