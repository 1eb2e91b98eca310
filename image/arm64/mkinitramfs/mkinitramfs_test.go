package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// cpioEntry is one entry read back from a newc archive.
type cpioEntry struct {
	name            string
	mode, rdev      [2]uint32 // mode: [type bits, permissions]; rdev: major, minor
	mtime, uid, gid uint32
	data            []byte
}

// readNewc parses a newc archive independently of the writer: 110-byte
// headers of 13 hex fields, name and data each padded to 4 bytes.
func readNewc(t *testing.T, b []byte) []cpioEntry {
	t.Helper()
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("no newc header at offset %d", off)
		}
		field := func(i int) uint32 {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatalf("header field %d at %d: %v", i, off, err)
			}
			return uint32(v)
		}
		mode, uid, gid, mtime, size := field(1), field(2), field(3), field(5), int(field(6))
		namesize := int(field(11))
		name := string(b[off+110 : off+110+namesize-1])
		if b[off+110+namesize-1] != 0 {
			t.Fatalf("%s: name not NUL-terminated", name)
		}
		dataOff := align(off + 110 + namesize)
		e := cpioEntry{name: name, mode: [2]uint32{mode &^ 0o7777, mode & 0o7777}, rdev: [2]uint32{field(9), field(10)},
			mtime: mtime, uid: uid, gid: gid, data: b[dataOff : dataOff+size]}
		off = align(dataOff + size)
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Fatalf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, e)
	}
}

// elfObject returns a minimal little-endian ELF64 relocatable object with a
// .modinfo section holding the given key=value strings, like a kernel module.
func elfObject(modinfo ...string) []byte {
	info := []byte(strings.Join(modinfo, "\x00") + "\x00")
	shstr := []byte("\x00.modinfo\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	infoOff := ehsize
	shstrOff := infoOff + len(info)
	shoff := (shstrOff + len(shstr) + 7) &^ 7
	b := make([]byte, shoff+3*shentsize)
	copy(b, []byte{0x7f, 'E', 'L', 'F', 2, 1, 1})
	le := binary.LittleEndian
	le.PutUint16(b[16:], 1)   // ET_REL
	le.PutUint16(b[18:], 183) // EM_AARCH64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[40:], uint64(shoff))
	le.PutUint16(b[52:], ehsize)
	le.PutUint16(b[58:], shentsize)
	le.PutUint16(b[60:], 3) // sections: null, .modinfo, .shstrtab
	le.PutUint16(b[62:], 2) // .shstrtab index
	copy(b[infoOff:], info)
	copy(b[shstrOff:], shstr)
	section := func(i int, name, typ uint32, off, size int) {
		s := b[shoff+i*shentsize:]
		le.PutUint32(s[0:], name)
		le.PutUint32(s[4:], typ)
		le.PutUint64(s[24:], uint64(off))
		le.PutUint64(s[32:], uint64(size))
		le.PutUint64(s[48:], 1)
	}
	section(1, 1, 1, infoOff, len(info))    // .modinfo, SHT_PROGBITS
	section(2, 10, 3, shstrOff, len(shstr)) // .shstrtab, SHT_STRTAB
	return b
}

// moduleTreeDir lays out lib/modules/VERSION with the given modules (name →
// depends) and builtin module names; names ending in ".gz" are compressed.
func moduleTreeDir(t *testing.T, mods map[string]string, builtin ...string) string {
	t.Helper()
	dir := t.TempDir()
	for name, deps := range mods {
		obj := elfObject("license=GPL", "depends="+deps, "name="+strings.TrimSuffix(name, ".gz"))
		file := strings.TrimSuffix(name, ".gz") + ".ko"
		if strings.HasSuffix(name, ".gz") {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			zw.Write(obj)
			zw.Close()
			obj, file = buf.Bytes(), file+".gz"
		}
		p := filepath.Join(dir, "kernel", "drivers", file)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, obj, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var list strings.Builder
	for _, b := range builtin {
		fmt.Fprintf(&list, "kernel/drivers/%s.ko\n", b)
	}
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte(list.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestResolveOrdersDependenciesFirst(t *testing.T) {
	// The shape of Debian's 6.1 arm64 kernel: virtio and virtio_ring are
	// built in, virtio-net needs net_failover which needs failover.
	dir := moduleTreeDir(t, map[string]string{
		"virtio_pci":            "virtio_pci_modern_dev,virtio_pci_legacy_dev,virtio,virtio_ring",
		"virtio_pci_modern_dev": "",
		"virtio_pci_legacy_dev": "",
		"virtio_net":            "net_failover,virtio,virtio_ring",
		"net-failover.gz":       "failover",
		"failover":              "",
	}, "virtio", "virtio_ring")
	tree, err := openModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	mods, err := tree.Resolve([]string{"virtio_pci", "virtio-net"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range mods {
		names = append(names, m.Name)
		if _, err := moduleDepends(m.Data); err != nil {
			t.Errorf("%s: data is not the uncompressed object: %v", m.Name, err)
		}
	}
	want := "virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("load order %q, want %q", got, want)
	}
}

func TestResolveErrors(t *testing.T) {
	dir := moduleTreeDir(t, map[string]string{"a": "b", "c": "d", "d": "c"})
	tree, err := openModuleTree(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"a":       "module a needs b, which is neither a module file",
		"missing": "module missing is neither a module file",
		"c":       "cycle",
	} {
		if _, err := tree.Resolve([]string{name}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Resolve(%s): %v, want an error with %q", name, err, want)
		}
	}
}

func TestBuildArchive(t *testing.T) {
	mods := []module{{Name: "failover", Data: []byte("obj-1")}, {Name: "net_failover", Data: []byte("object-2")}}
	archive, err := build(mods, []byte("INIT"), []byte("RELAYD-BINARY"), []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	again, err := build(mods, []byte("INIT"), []byte("RELAYD-BINARY"), []byte(`{"a":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(archive, again) {
		t.Error("two builds from the same inputs differ: the image is not reproducible")
	}
	zr, err := gzip.NewReader(bytes.NewReader(archive))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[string]cpioEntry{}
	for _, e := range readNewc(t, raw) {
		if e.mtime != 0 || e.uid != 0 || e.gid != 0 {
			t.Errorf("%s: mtime %d uid %d gid %d, want all 0", e.name, e.mtime, e.uid, e.gid)
		}
		if strings.HasPrefix(e.name, "/") {
			t.Errorf("%s: absolute name", e.name)
		}
		entries[e.name] = e
	}
	for name, want := range map[string]struct {
		typ, perm uint32
		data      string
	}{
		"init":                    {modeFile, 0o755, "INIT"},
		"bin/relayd":              {modeFile, 0o755, "RELAYD-BINARY"},
		"etc/jnrelay/relayd.json": {modeFile, 0o644, `{"a":1}`},
		"lib/modules/failover.ko": {modeFile, 0o644, "obj-1"},
		"lib/modules/load.order":  {modeFile, 0o644, "failover\nnet_failover\n"},
		"dev/console":             {modeChar, 0o600, ""},
		"proc":                    {modeDir, 0o755, ""},
		"tmp":                     {modeDir, 0o1777, ""},
		"var/lib/jnrelay":         {modeDir, 0o755, ""},
	} {
		e, ok := entries[name]
		if !ok {
			t.Errorf("%s missing", name)
			continue
		}
		if e.mode != [2]uint32{want.typ, want.perm} || string(e.data) != want.data {
			t.Errorf("%s: type %o perm %o data %q, want %o %o %q", name, e.mode[0], e.mode[1], e.data, want.typ, want.perm, want.data)
		}
	}
	if c := entries["dev/console"]; c.rdev != [2]uint32{5, 1} {
		t.Errorf("dev/console is device %d:%d, want 5:1", c.rdev[0], c.rdev[1])
	}
}
