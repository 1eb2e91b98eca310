package main

import (
	"fmt"
	"io"
	"strings"
)

// newcWriter writes a cpio archive in the "new ASCII" (newc) format, the one
// the Linux kernel unpacks as an initramfs. Every entry gets mtime 0, uid and
// gid 0 and inode numbers in write order, so the same inputs give the same
// bytes (a reproducible image), and device nodes need no privileges: they are
// only header fields here.
type newcWriter struct {
	w   io.Writer
	ino uint32
	err error
}

// File type bits of the cpio mode field (the same as st_mode's).
const (
	modeDir  = 0o040000
	modeFile = 0o100000
	modeChar = 0o020000
)

func (c *newcWriter) header(name string, mode uint32, size int, rdevMajor, rdevMinor uint32) {
	c.ino++
	c.entry(c.ino, name, mode, size, rdevMajor, rdevMinor)
}

func (c *newcWriter) entry(ino uint32, name string, mode uint32, size int, rdevMajor, rdevMinor uint32) {
	nlink := uint32(1)
	if mode&0o170000 == modeDir {
		nlink = 2
	}
	name = strings.TrimPrefix(name, "/")
	h := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, size, 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(h + name + "\x00"))
	c.pad(len(h) + len(name) + 1)
}

func (c *newcWriter) write(b []byte) {
	if c.err == nil {
		_, c.err = c.w.Write(b)
	}
}

// pad writes the zero bytes that align the next field to 4 bytes after n
// bytes of header or data.
func (c *newcWriter) pad(n int) {
	if r := n % 4; r != 0 {
		c.write(make([]byte, 4-r))
	}
}

// Dir adds a directory with permissions perm.
func (c *newcWriter) Dir(name string, perm uint32) { c.header(name, modeDir|perm, 0, 0, 0) }

// File adds a regular file.
func (c *newcWriter) File(name string, perm uint32, data []byte) {
	c.header(name, modeFile|perm, len(data), 0, 0)
	c.write(data)
	c.pad(len(data))
}

// CharDev adds a character device node.
func (c *newcWriter) CharDev(name string, perm, major, minor uint32) {
	c.header(name, modeChar|perm, 0, major, minor)
}

// Close writes the trailer entry and returns the first write error.
func (c *newcWriter) Close() error {
	c.entry(0, "TRAILER!!!", 0, 0, 0, 0)
	return c.err
}
