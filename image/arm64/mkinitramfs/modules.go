package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/elf"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// module is one kernel module file to put into the initramfs.
type module struct {
	Name string // normalised: dashes become underscores, as the kernel does
	Path string // file in the kernel package (.ko, .ko.xz, .ko.zst or .ko.gz)
	Data []byte // uncompressed ELF object
}

// moduleTree indexes the module files of one kernel (lib/modules/VERSION as
// unpacked from Debian's linux-image package, which ships no modules.dep:
// depmod writes that at install time, so dependencies are read from each
// module's own .modinfo section instead).
type moduleTree struct {
	dir     string
	files   map[string]string // name -> path
	builtin map[string]bool   // modules built into the kernel image
}

// moduleSuffixes are the file name endings of modules, compressed or not.
var moduleSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func normaliseModule(name string) string { return strings.ReplaceAll(name, "-", "_") }

func openModuleTree(dir string) (*moduleTree, error) {
	t := &moduleTree{dir: dir, files: map[string]string{}, builtin: map[string]bool{}}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		for _, suf := range moduleSuffixes {
			if base, ok := strings.CutSuffix(d.Name(), suf); ok {
				t.files[normaliseModule(base)] = p
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scan modules in %s: %w", dir, err)
	}
	if len(t.files) == 0 {
		return nil, fmt.Errorf("no kernel modules under %s", dir)
	}
	// modules.builtin lists paths like kernel/drivers/virtio/virtio.ko of
	// modules compiled into the image: a dependency on one needs no file.
	f, err := os.Open(filepath.Join(dir, "modules.builtin"))
	if err != nil {
		return nil, fmt.Errorf("kernel module list: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		base := filepath.Base(strings.TrimSpace(sc.Text()))
		if name, ok := strings.CutSuffix(base, ".ko"); ok {
			t.builtin[normaliseModule(name)] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read modules.builtin: %w", err)
	}
	return t, nil
}

// Resolve returns the modules named (and everything they depend on) in an
// order they can be loaded in: each module after its dependencies. Modules
// built into the kernel are left out.
func (t *moduleTree) Resolve(names []string) ([]module, error) {
	var order []module
	state := map[string]int{} // 1 = visiting, 2 = done
	var visit func(name, from string) error
	visit = func(name, from string) error {
		name = normaliseModule(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle at %s", name)
		case 2:
			return nil
		}
		path, ok := t.files[name]
		if !ok {
			if t.builtin[name] {
				state[name] = 2
				return nil
			}
			if from != "" {
				return fmt.Errorf("module %s needs %s, which is neither a module file under %s nor built in", from, name, t.dir)
			}
			return fmt.Errorf("module %s is neither a module file under %s nor built in", name, t.dir)
		}
		state[name] = 1
		data, err := readModule(path)
		if err != nil {
			return err
		}
		deps, err := moduleDepends(data)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		for _, d := range deps {
			if err := visit(d, name); err != nil {
				return err
			}
		}
		state[name] = 2
		order = append(order, module{Name: name, Path: path, Data: data})
		return nil
	}
	for _, n := range names {
		if err := visit(n, ""); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// readModule returns the uncompressed module object. Compressed modules are
// unpacked here, at build time, so the guest's init needs neither a
// decompressor nor a kernel built with module decompression.
func readModule(path string) ([]byte, error) {
	var (
		data []byte
		err  error
	)
	switch {
	case strings.HasSuffix(path, ".ko"):
		data, err = os.ReadFile(path)
	case strings.HasSuffix(path, ".ko.gz"):
		var f *os.File
		if f, err = os.Open(path); err == nil {
			defer f.Close()
			var zr *gzip.Reader
			if zr, err = gzip.NewReader(f); err == nil {
				data, err = io.ReadAll(zr)
			}
		}
	case strings.HasSuffix(path, ".ko.xz"):
		data, err = exec.Command("xz", "-dc", path).Output()
	case strings.HasSuffix(path, ".ko.zst"):
		data, err = exec.Command("zstd", "-dc", path).Output()
	default:
		err = fmt.Errorf("not a module file name")
	}
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", path, err)
	}
	return data, nil
}

// moduleDepends reads the depends= entry of a module's .modinfo section (a
// list of NUL-terminated key=value strings; what modinfo -F depends prints).
func moduleDepends(obj []byte) ([]string, error) {
	f, err := elf.NewFile(bytes.NewReader(obj))
	if err != nil {
		return nil, fmt.Errorf("not an ELF object: %w", err)
	}
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("no .modinfo section")
	}
	info, err := sec.Data()
	if err != nil {
		return nil, fmt.Errorf("read .modinfo: %w", err)
	}
	for kv := range bytes.SplitSeq(info, []byte{0}) {
		v, ok := bytes.CutPrefix(kv, []byte("depends="))
		if !ok {
			continue
		}
		var deps []string
		for d := range strings.SplitSeq(string(v), ",") {
			if d != "" {
				deps = append(deps, d)
			}
		}
		return deps, nil
	}
	return nil, nil
}
