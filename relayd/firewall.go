package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/config"
)

// printFirewallPorts is -firewall-ports: the ports callers reach relayd
// on under the configuration at path, for the OpenWrt init script, which
// opens them in the router's firewall.
//
// Root runs it on a file relayd's user owns and may have replaced: the
// file is opened without following a link and refused when it has
// another name (a hard link to a file of root's), so that nothing but
// relayd's own configuration is read, and no line of another file can
// reach an error message.
func printFirewallPorts(path string, stdout, stderr io.Writer) int {
	cfg, err := loadOwnConfig(path)
	if err != nil {
		fmt.Fprintln(stderr, "relayd:", err)
		return 1
	}
	for _, p := range cfg.InboundPorts() {
		fmt.Fprintln(stdout, p)
	}
	return 0
}

func loadOwnConfig(path string) (config.Config, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return config.Config{}, fmt.Errorf("read config: %w", err)
	}
	fd, err := unix.Open(abs, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return config.Config{}, fmt.Errorf("config %s is a symbolic link: not read", path)
		}
		return config.Config{}, fmt.Errorf("read config %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), abs)
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return config.Config{}, fmt.Errorf("read config %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return config.Config{}, fmt.Errorf("config %s is not a regular file: not read", path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink != 1 {
		return config.Config{}, fmt.Errorf("config %s has %d names (a hard link): not read", path, st.Nlink)
	}
	cfg, err := config.ParseAt(f, abs)
	if err != nil {
		return config.Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return cfg, nil
}
