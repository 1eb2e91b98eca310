//go:build linux

package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
)

// showCommand is the console line that prints a file of /proc to the
// console: "jnrelay-show /proc/PATH". The image test reads the kernel's
// own view through it (conntrack entries with their [OFFLOAD] mark, CPU
// time in /proc/stat), which no relayd API would prove.
const showCommand = "jnrelay-show"

// parseShow reads a console line; ok is false for any other line.
func parseShow(line string) (path string, ok bool, err error) {
	f := strings.Fields(line)
	if len(f) == 0 || f[0] != showCommand {
		return "", false, nil
	}
	if len(f) != 2 || !strings.HasPrefix(f[1], "/proc/") || strings.Contains(f[1], "..") {
		return "", true, fmt.Errorf("%s: want one path under /proc/", showCommand)
	}
	return f[1], true, nil
}

// show logs every line of path as "show PATH: LINE", then
// "show PATH: end (N lines)", which a reader of the console waits for.
func show(path string) {
	f, err := os.Open(path)
	if err != nil {
		logf("show %s: %v", path, err)
		return
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		logf("show %s: %s", path, sc.Text())
		n++
	}
	if err := sc.Err(); err != nil {
		logf("show %s: %v", path, err)
	}
	logf("show %s: end (%d lines)", path, n)
}
