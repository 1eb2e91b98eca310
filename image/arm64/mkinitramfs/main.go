// Command mkinitramfs writes the initramfs of jnrelay's arm64 test image: a
// gzip-compressed newc cpio archive holding the init program (PID 1), relayd,
// a default relayd configuration and the kernel modules the guest must load
// (virtio-net and its dependencies, in load order). It runs on the build
// host; the archive is written from Go so the build needs no cpio tool and
// no privileges (device nodes are header fields), and it is reproducible:
// fixed timestamps, owners and inode numbers, and a gzip header without name
// or time.
//
// Usage:
//
//	mkinitramfs -modules DIR -load virtio_pci,virtio_net -init INIT -relayd RELAYD -config relayd.json -o initrd.gz
package main

import (
	"bytes"
	"compress/gzip"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "mkinitramfs:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("mkinitramfs", flag.ContinueOnError)
	modDir := fs.String("modules", "", "the kernel's module `directory` (lib/modules/VERSION)")
	load := fs.String("load", "virtio_pci,virtio_net", "comma-separated `modules` the guest loads at boot (dependencies are added)")
	initPath := fs.String("init", "", "the init program (`file`, static, for the guest's architecture)")
	relayd := fs.String("relayd", "", "relayd `binary` (static, for the guest's architecture)")
	config := fs.String("config", "", "default relayd configuration `file` (/etc/jnrelay/relayd.json in the image)")
	out := fs.String("o", "", "output `file` (gzip-compressed newc cpio)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	for flagName, v := range map[string]string{"-modules": *modDir, "-init": *initPath, "-relayd": *relayd, "-config": *config, "-o": *out} {
		if v == "" {
			return fmt.Errorf("%s is required", flagName)
		}
	}
	tree, err := openModuleTree(*modDir)
	if err != nil {
		return err
	}
	var names []string
	for n := range strings.SplitSeq(*load, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	mods, err := tree.Resolve(names)
	if err != nil {
		return err
	}
	files := map[string][]byte{}
	for name, path := range map[string]string{"init": *initPath, "relayd": *relayd, "config": *config} {
		if files[name], err = os.ReadFile(path); err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
	}
	archive, err := build(mods, files["init"], files["relayd"], files["config"])
	if err != nil {
		return err
	}
	tmp := *out + ".tmp"
	if err := os.WriteFile(tmp, archive, 0o644); err != nil {
		return fmt.Errorf("write initramfs: %w", err)
	}
	if err := os.Rename(tmp, *out); err != nil {
		return errors.Join(fmt.Errorf("write initramfs: %w", err), os.Remove(tmp))
	}
	var loaded []string
	for _, m := range mods {
		loaded = append(loaded, m.Name)
	}
	fmt.Printf("mkinitramfs: %s: %d bytes; modules in load order: %s\n", *out, len(archive), strings.Join(loaded, " "))
	return nil
}

// modulesDir holds the module objects in the image, and loadOrder (a file in
// it) their names, one per line, in the order init loads them.
const (
	modulesDir = "lib/modules"
	loadOrder  = "load.order"
)

// build returns the compressed archive.
func build(mods []module, initProg, relayd, config []byte) ([]byte, error) {
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	c := &newcWriter{w: zw}
	// Mount points and the directories relayd writes to (state, API
	// socket, the configuration's last-good copy): the initramfs is the
	// guest's writable root file system.
	for _, d := range []string{"bin", "dev", "etc", "etc/jnrelay", "lib", modulesDir, "proc", "run", "run/jnrelay", "sys", "tmp", "var", "var/lib", "var/lib/jnrelay"} {
		perm := uint32(0o755)
		if d == "tmp" {
			perm = 0o1777
		}
		c.Dir(d, perm)
	}
	// The kernel opens /dev/console for init's standard streams before it
	// runs init, i.e. before devtmpfs is mounted: without this node init
	// would start with no output at all.
	c.CharDev("dev/console", 0o600, 5, 1)
	c.File("init", 0o755, initProg)
	c.File("bin/relayd", 0o755, relayd)
	c.File("etc/jnrelay/relayd.json", 0o644, config)
	var order strings.Builder
	for _, m := range mods {
		c.File(filepath.Join(modulesDir, m.Name+".ko"), 0o644, m.Data)
		order.WriteString(m.Name + "\n")
	}
	c.File(filepath.Join(modulesDir, loadOrder), 0o644, []byte(order.String()))
	if err := c.Close(); err != nil {
		return nil, fmt.Errorf("write cpio: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("compress: %w", err)
	}
	return buf.Bytes(), nil
}
