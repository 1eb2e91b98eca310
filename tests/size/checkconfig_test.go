package size

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// armv7Binary returns the linux/arm v7 relayd to test: $RELAYD_ARMV7_BIN
// (e.g. bin/cross/relayd-linux-armv7 from make cross) or one built like make
// cross builds it.
func armv7Binary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("RELAYD_ARMV7_BIN"); bin != "" {
		return bin
	}
	out := filepath.Join(t.TempDir(), "relayd-linux-armv7")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, "github.com/jnrelay/jnrelay/relayd")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm", "GOARM=7", "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cross build: %v\n%s", err, b)
	}
	return out
}

// TestARMv7CheckConfigUnderQemu runs the board binary itself (static
// linux/arm v7, emulated by qemu-user) on a valid and on invalid
// configurations: the exit status and message are what an installer or a
// service manager's pre-start check sees on the device.
func TestARMv7CheckConfigUnderQemu(t *testing.T) {
	qemu, err := exec.LookPath("qemu-arm-static")
	if err != nil {
		if os.Getenv("JNRELAY_REQUIRE_IMAGE") == "1" {
			t.Fatalf("qemu-arm-static not found (Debian package qemu-user-static): %v (JNRELAY_REQUIRE_IMAGE=1)", err)
		}
		t.Skipf("qemu-arm-static not found (Debian package qemu-user-static, installed by tests/deps.sh): %v", err)
	}
	bin := armv7Binary(t)
	// It must really be the board's binary: 32-bit ARM and static (no
	// interpreter), or qemu would be running something else.
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked", bin)
		}
	}
	if f.Class != elf.ELFCLASS32 || f.Machine != elf.EM_ARM {
		t.Errorf("%s is %v %v, want ELFCLASS32 EM_ARM", bin, f.Class, f.Machine)
	}
	f.Close()

	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	example, err := filepath.Abs("../../docs/relayd.example.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, file string
		status     int
		stdout     []string // substrings of standard output
		stderr     []string // substrings of standard error
	}{
		{"valid example", example, 0, []string{example + ": configuration valid"}, nil},
		{"minimal valid", write("minimal.json", `{"public_address":"198.51.100.7","xmpp":[{"type":"component","server":"127.0.0.1:5347","domain":"relay.example.org","secret":"s"}]}`), 0, []string{"minimal.json: configuration valid"}, nil},
		{"bad ports", write("ports.json", `{"ports":{"min":5,"max":3},"xmpp":[]}`), 1, nil, []string{"ports.min: 5 is outside 1024-65535"}},
		{"bad address", write("address.json", `{"public_address":"0.0.0.0"}`), 1, nil, []string{"public_address: 0.0.0.0 cannot be reached"}},
		{"not json", write("broken.json", `{"ports":`), 1, nil, []string{"broken.json"}},
		{"missing file", filepath.Join(dir, "absent.json"), 1, nil, []string{"absent.json"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(qemu, bin, "-check-config", c.file)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			status := 0
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				status = exit.ExitCode()
			} else if err != nil {
				t.Fatalf("run %s under %s: %v", bin, qemu, err)
			}
			if status != c.status {
				t.Errorf("exit status %d, want %d\nstdout: %s\nstderr: %s", status, c.status, &stdout, &stderr)
			}
			for _, want := range c.stdout {
				if !strings.Contains(stdout.String(), want) {
					t.Errorf("stdout %q lacks %q", &stdout, want)
				}
			}
			for _, want := range c.stderr {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr %q lacks %q", &stderr, want)
				}
			}
			if c.status != 0 && stdout.Len() != 0 {
				t.Errorf("an invalid configuration printed %q on stdout", &stdout)
			}
		})
	}
}
