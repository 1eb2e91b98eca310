package image

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// console collects the guest's serial console (qemu's standard output):
// kernel messages, init's "init: " lines and relayd's JSON log records.
type console struct {
	mu      sync.Mutex
	lines   []string
	changed chan struct{} // closed and replaced on every line and at the end
	ended   bool          // the output ended: qemu exited
}

func newConsole(r io.Reader) *console {
	c := &console{changed: make(chan struct{})}
	go c.read(r)
	return c
}

func (c *console) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// The guest's tty turns \n into \r\n.
		line := strings.TrimRight(sc.Text(), "\r")
		c.mu.Lock()
		c.lines = append(c.lines, line)
		close(c.changed)
		c.changed = make(chan struct{})
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.ended = true
	close(c.changed)
	c.mu.Unlock()
}

// record parses a relayd JSON log line; ok is false for any other line.
func record(line string) (harness.LogRecord, bool) {
	i := strings.IndexByte(line, '{')
	if i < 0 {
		return nil, false
	}
	var rec harness.LogRecord
	if json.Unmarshal([]byte(line[i:]), &rec) != nil {
		return nil, false
	}
	return rec, true
}

// wait returns the first line (from the start of the console) for which
// match is true. It fails when ctx ends or the console ends first.
func (c *console) wait(ctx context.Context, what string, match func(line string) bool) (string, error) {
	seen := 0
	for {
		c.mu.Lock()
		lines, ended, changed := c.lines[seen:], c.ended, c.changed
		c.mu.Unlock()
		for _, l := range lines {
			if match(l) {
				return l, nil
			}
		}
		seen += len(lines)
		if ended {
			return "", fmt.Errorf("waiting for %s: the guest's console ended (qemu exited)", what)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for %s: %w", what, ctx.Err())
		case <-changed:
		}
	}
}

// waitLog waits for a relayd log record with message msg.
func (c *console) waitLog(ctx context.Context, msg string) (harness.LogRecord, error) {
	line, err := c.wait(ctx, fmt.Sprintf("relayd log %q", msg), func(l string) bool {
		rec, ok := record(l)
		return ok && rec.Msg() == msg
	})
	if err != nil {
		return nil, err
	}
	rec, _ := record(line)
	return rec, nil
}

// String returns everything the console printed so far.
func (c *console) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.lines, "\n")
}
