//go:build linux

// Command init is PID 1 of jnrelay's arm64 test image (see docs/image.md):
// it mounts /proc, /sys and /dev, loads the virtio-net driver modules the
// image carries, configures lo and eth0 for qemu's user network, writes
// relayd's configuration from the kernel command line when one is given,
// and runs relayd. When relayd exits, init logs its status and powers the
// machine off, so whoever runs the machine (the e2e test) sees it end. A
// "jnrelay-clock-step SECONDS" line on the console steps the wall clock
// (clock.go), for the test of relayd under clock steps.
//
// It is written for the image's arm64 guest but is plain Linux code, so it
// builds (and is vetted and unit-tested) on any Linux host. It refuses to
// run unless it is PID 1: on a host it would otherwise mount file systems,
// reconfigure interfaces and power the machine off.
//
// A Go program rather than busybox keeps the image to what the project
// builds itself plus Debian's kernel: no second foreign-architecture package
// to fetch, and every step reports a precise error.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const (
	relaydBin    = "/bin/relayd"
	relaydConfig = "/etc/jnrelay/relayd.json"
	modulesDir   = "/lib/modules"
	// linkTimeout bounds the wait for eth0 to appear after the driver
	// loaded (the device is probed asynchronously).
	linkTimeout = 20 * time.Second
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "init: must run as PID 1 of the test image (it mounts, configures the network and powers off)")
		os.Exit(2)
	}
	// Subscribe before relayd starts, so its exit cannot go unnoticed.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, unix.SIGINT, unix.SIGTERM, unix.SIGCHLD)
	pid, err := boot()
	if err != nil {
		logf("boot failed: %v", err)
		powerOff()
	}
	go serveConsole(os.Stdin)
	supervise(pid, sigs)
}

// logf writes one line to the console, marked with the seconds since boot
// like the kernel's own messages so the two can be read together.
func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "init: [%8.3f] %s\n", uptime().Seconds(), fmt.Sprintf(format, args...))
}

func uptime() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return 0
	}
	return time.Duration(ts.Nano())
}

// boot prepares the machine and starts relayd; it returns relayd's PID.
func boot() (int, error) {
	for _, m := range []struct{ fstype, target string }{{"proc", "/proc"}, {"sysfs", "/sys"}, {"devtmpfs", "/dev"}} {
		if err := unix.Mount(m.fstype, m.target, m.fstype, unix.MS_NOSUID|unix.MS_NOEXEC, ""); err != nil {
			return 0, fmt.Errorf("mount %s on %s: %w", m.fstype, m.target, err)
		}
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return 0, fmt.Errorf("read kernel command line: %w", err)
	}
	p, err := parseCmdline(string(cmdline))
	if err != nil {
		return 0, fmt.Errorf("kernel command line: %w", err)
	}
	if p.Config != nil {
		if err := os.WriteFile(relaydConfig, p.Config, 0o600); err != nil {
			return 0, fmt.Errorf("write relayd configuration: %w", err)
		}
		logf("relayd configuration from the kernel command line (%d bytes)", len(p.Config))
	}
	if err := loadModules(); err != nil {
		return 0, err
	}
	if err := configureNetwork(p); err != nil {
		return 0, err
	}
	logf("network up: eth0 %s, default via %s", p.Addr, p.Gateway)
	// Ctrl-Alt-Del then signals init (SIGINT) instead of rebooting at
	// once: init passes it on to relayd, which ends its channels cleanly.
	if err := unix.Reboot(unix.LINUX_REBOOT_CMD_CAD_OFF); err != nil {
		logf("ctrl-alt-del stays a hard reboot: %v", err)
	}
	argv := []string{relaydBin, "-config", relaydConfig, "-api-socket", "/run/jnrelay/api.sock", "-state-dir", "/var/lib/jnrelay"}
	proc, err := os.StartProcess(relaydBin, argv, &os.ProcAttr{
		Env:   []string{"PATH=/bin", "HOME=/var/lib/jnrelay"},
		Files: []*os.File{os.Stdin, os.Stderr, os.Stderr},
	})
	if err != nil {
		return 0, fmt.Errorf("start relayd: %w", err)
	}
	logf("relayd started (pid %d)", proc.Pid)
	return proc.Pid, nil
}

// loadModules loads the modules listed in modules/load.order, which the
// image builder wrote in dependency order.
func loadModules() error {
	list, err := os.ReadFile(filepath.Join(modulesDir, "load.order"))
	if err != nil {
		return fmt.Errorf("module list: %w", err)
	}
	sc := bufio.NewScanner(strings.NewReader(string(list)))
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" {
			continue
		}
		if err := loadModule(filepath.Join(modulesDir, name+".ko")); err != nil {
			return fmt.Errorf("load module %s: %w", name, err)
		}
	}
	return nil
}

func loadModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = unix.FinitModule(int(f.Fd()), "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil // already loaded, e.g. pulled in by another module
	}
	return err
}

// configureNetwork brings up lo and eth0 with p's address and default route.
func configureNetwork(p params) error {
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		return fmt.Errorf("find lo: %w", err)
	}
	if err := netlink.LinkSetUp(lo); err != nil {
		return fmt.Errorf("set lo up: %w", err)
	}
	eth, err := waitLink("eth0", linkTimeout)
	if err != nil {
		return err
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr.Addr().AsSlice(), Mask: net.CIDRMask(p.Addr.Bits(), 32)}}
	if err := netlink.AddrAdd(eth, addr); err != nil {
		return fmt.Errorf("add %s to eth0: %w", p.Addr, err)
	}
	if err := netlink.LinkSetUp(eth); err != nil {
		return fmt.Errorf("set eth0 up: %w", err)
	}
	route := &netlink.Route{LinkIndex: eth.Attrs().Index, Gw: p.Gateway.AsSlice()}
	if err := netlink.RouteAdd(route); err != nil {
		return fmt.Errorf("default route via %s: %w", p.Gateway, err)
	}
	return nil
}

// waitLink waits until the interface called name exists: the driver probes
// the device asynchronously after its module loaded. It watches link
// notifications, checking once after subscribing so an interface that
// appeared before that is not missed.
func waitLink(name string, timeout time.Duration) (netlink.Link, error) {
	updates := make(chan netlink.LinkUpdate, 16)
	done := make(chan struct{})
	defer close(done)
	if err := netlink.LinkSubscribe(updates, done); err != nil {
		return nil, fmt.Errorf("watch links: %w", err)
	}
	if l, err := netlink.LinkByName(name); err == nil {
		return l, nil
	}
	deadline := time.After(timeout)
	for {
		select {
		case u := <-updates:
			if u.Attrs().Name == name {
				return netlink.LinkByName(name)
			}
		case <-deadline:
			return nil, fmt.Errorf("no %s within %s of loading its driver: is the virtio-net device attached (-device virtio-net-pci)?", name, timeout)
		}
	}
}

// supervise reaps every child (PID 1 inherits orphans), passes SIGINT and
// SIGTERM on to relayd, and powers off once relayd has exited.
func supervise(relayd int, sigs <-chan os.Signal) {
	for sig := range sigs {
		if sig != unix.SIGCHLD {
			logf("%v: stopping relayd", sig)
			if err := unix.Kill(relayd, sig.(unix.Signal)); err != nil {
				logf("signal relayd: %v", err)
			}
			continue
		}
		for {
			var status unix.WaitStatus
			pid, err := unix.Wait4(-1, &status, unix.WNOHANG, nil)
			if err != nil || pid <= 0 {
				break
			}
			if pid == relayd {
				logf("relayd exited: %s", describe(status))
				powerOff()
			}
		}
	}
}

func describe(s unix.WaitStatus) string {
	switch {
	case s.Exited():
		return fmt.Sprintf("status %d", s.ExitStatus())
	case s.Signaled():
		return fmt.Sprintf("killed by %v", s.Signal())
	}
	return fmt.Sprintf("wait status %#x", uint32(s))
}

// powerOff ends the machine (qemu exits). PID 1 must never return: if the
// power-off call fails, init stays, so the kernel does not panic over a
// dead init and the console shows why.
func powerOff() {
	unix.Sync()
	logf("powering off")
	err := unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	logf("power off failed: %v; halting here", err)
	for {
		time.Sleep(time.Hour)
	}
}
