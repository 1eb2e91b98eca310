package provision

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/internal/atomicfile"
)

func TestStoreLoadETag(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relayd.json")
	if err := os.WriteFile(path, []byte(baseDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, etag, err := NewStore(path).Load()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.XMPP[0].Secret != "component-secret" {
		t.Fatalf("loaded %+v", cfg.XMPP[0])
	}
	if want := ETag([]byte(baseDoc)); etag != want || !strings.HasPrefix(etag, `"`) || len(etag) != 66 {
		t.Fatalf("etag %s, want %s (quoted hex SHA-256)", etag, want)
	}

	if err := os.WriteFile(path, []byte(`{"xmpp": [{"type": "carrier-pigeon"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, etag, err = NewStore(path).Load()
	if !errors.Is(err, ErrInvalidFile) || etag != ETag([]byte(`{"xmpp": [{"type": "carrier-pigeon"}]}`)) {
		t.Fatalf("invalid file: etag %q err %v", etag, err)
	}
	_, _, err = NewStore(path + ".missing").Load()
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
}

func TestStoreSaveRoundTripAndLastGood(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "relayd.json")
	if err := os.WriteFile(path, []byte(baseDoc), 0o640); err != nil {
		t.Fatal(err)
	}
	s := NewStore(path)
	cfg, _, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	cfg.Ports = config.PortRange{Min: 41000, Max: 41999}
	etag, err := s.Save(cfg)
	if err != nil {
		t.Fatal(err)
	}
	got, etag2, err := s.Load()
	if err != nil || etag2 != etag || got.Ports.Min != 41000 || got.XMPP[1].Password != "account-password" {
		t.Fatalf("after save: %+v %s %s %v", got.Ports, etag, etag2, err)
	}
	fi, _ := os.Stat(path)
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want the previous file's 0640", fi.Mode().Perm())
	}
	lg, _, err := s.LoadLastGood()
	if err != nil || lg.Ports.Min != 40000 {
		t.Fatalf("last good: %+v %v", lg.Ports, err)
	}
	if raw, _ := os.ReadFile(path + LastGoodSuffix); string(raw) != baseDoc {
		t.Fatalf("last-good is not the previous file byte for byte:\n%s", raw)
	}

	// An invalid file on disk is replaced but never becomes last-good.
	if err := os.WriteFile(path, []byte("{ torn"), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg.Ports = config.PortRange{Min: 42000, Max: 42999}
	if _, err := s.Save(cfg); err != nil {
		t.Fatal(err)
	}
	if lg, _, _ := s.LoadLastGood(); lg.Ports.Min != 40000 {
		t.Fatalf("last-good replaced by an invalid file: %+v", lg.Ports)
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp-") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

func TestStoreNoWriteWhenUnchanged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relayd.json")
	if err := os.WriteFile(path, []byte(baseDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewStore(path)
	cfg, etag, err := s.Load()
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(path)
	// Semantically equal (the hand-written file is formatted differently):
	// still no write.
	got, err := s.Save(cfg)
	if err != nil || got != etag {
		t.Fatalf("save unchanged: %s %v, want etag %s", got, err, etag)
	}
	after, _ := os.Stat(path)
	if !os.SameFile(before, after) || !after.ModTime().Equal(before.ModTime()) {
		t.Fatal("an unchanged configuration was rewritten")
	}
	if _, err := os.Stat(path + LastGoodSuffix); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("last-good written for an unchanged configuration: %v", err)
	}
}

func TestStoreRefusesInvalid(t *testing.T) {
	path := filepath.Join(t.TempDir(), "relayd.json")
	if err := os.WriteFile(path, []byte(baseDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	s := NewStore(path)
	cfg, _, _ := s.Load()
	cfg.Ports.Min = 80
	if _, err := s.Save(cfg); err == nil || !strings.Contains(err.Error(), "ports.min") {
		t.Fatalf("invalid configuration saved: %v", err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != baseDoc {
		t.Fatal("file changed")
	}
}

func TestStoreFollowsSymlink(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "data", "relayd.json")
	if err := os.MkdirAll(filepath.Dir(real), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, []byte(baseDoc), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "relayd.json")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	s := NewStore(link)
	cfg, _, _ := s.Load()
	cfg.Channel.MaxKbps = 512
	if _, err := s.Save(cfg); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("symlink replaced by a file: %v", err)
	}
	if got, _, _ := NewStore(real).Load(); got.Channel.MaxKbps != 512 {
		t.Fatal("target not updated")
	}
}

// powerCutConfigs are the two documents the helper alternates between.
// Each is about 20 KB (a long STUN server list, cheap to validate), so a
// write spans many pages and a kill can land in the middle of one.
func powerCutConfigs(t testing.TB) [2]config.Config {
	var out [2]config.Config
	for i := range out {
		var servers []string
		for j := range 500 {
			servers = append(servers, fmt.Sprintf(`"stun-%d-%04d.example.org:3478"`, i, j))
		}
		doc := strings.Replace(baseDoc, `"public_address": "203.0.113.10",`,
			fmt.Sprintf(`"public_address": "203.0.113.%d", "public_address_stun": [%s],`, 10+i, strings.Join(servers, ",")), 1)
		out[i] = mustParse(t, doc)
	}
	return out
}

// saveLoopHelper runs in a child process: Save A, B, A, B… writing one
// byte to stdout after each, until killed (bounded in any case).
func saveLoopHelper() int {
	cfgs := powerCutConfigs(&helperTB{})
	s := NewStore(os.Getenv("PROVISION_STORE"))
	for i := range 100000 {
		if _, err := s.Save(cfgs[i%2]); err != nil {
			fmt.Fprintln(os.Stderr, "save:", err)
			return 3
		}
		if _, err := os.Stdout.Write([]byte{'.'}); err != nil {
			return 4
		}
	}
	return 0
}

// TestStorePowerCut SIGKILLs a process doing Saves in a loop at random
// moments, hundreds of times, and checks after every kill that the file
// is a complete old or new configuration (as relayd would load it) and
// that last-good, when present, is too.
func TestStorePowerCut(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "relayd.json")
	cfgs := powerCutConfigs(t)
	if _, err := NewStore(path).Save(cfgs[0]); err != nil {
		t.Fatal(err)
	}
	kills, budget := 200, 90*time.Second
	if testing.Short() {
		kills, budget = 40, 20*time.Second
	}
	deadline := time.Now().Add(budget)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var seen [2]int
	midSave, tornTemp, done := 0, 0, 0
	for done < kills && time.Now().Before(deadline) {
		cmd := exec.Command(exe)
		cmd.Env = append(os.Environ(), "GORACE=atexit_sleep_ms=0", helperEnv+"=saveloop", "PROVISION_STORE="+path)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Wait for the child to be in its loop (progress bytes), time
		// one of its saves, then kill it at a random moment within the
		// next two: the delay only picks the moment, correctness never
		// depends on it.
		br := bufio.NewReader(out)
		n := 1 + rng.IntN(3)
		_, rerr := io.ReadFull(br, make([]byte, n))
		if rerr == nil {
			start := time.Now()
			_, rerr = br.ReadByte()
			period := max(time.Since(start), time.Microsecond)
			time.Sleep(time.Duration(rng.Int64N(int64(2 * period))))
		}
		_ = cmd.Process.Signal(syscall.SIGKILL)
		werr := cmd.Wait()
		if rerr != nil {
			t.Fatalf("helper stopped before %d saves: %v (%v) %s", n, rerr, werr, stderr.String())
		}
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
			t.Fatalf("helper was not killed: %v %s", werr, stderr.String())
		}
		done++

		got, err := config.Load(path)
		if err != nil {
			t.Fatalf("kill %d: the file is not a complete configuration: %v", done, err)
		}
		switch {
		case sameConfig(got, cfgs[0]):
			seen[0]++
		case sameConfig(got, cfgs[1]):
			seen[1]++
		default:
			t.Fatalf("kill %d: the file is neither the old nor the new configuration", done)
		}
		if _, err := os.Stat(path + LastGoodSuffix); err == nil {
			lg, err := config.Load(path + LastGoodSuffix)
			if err != nil || (!sameConfig(lg, cfgs[0]) && !sameConfig(lg, cfgs[1])) {
				t.Fatalf("kill %d: last-good is not a complete configuration: %v", done, err)
			}
		}
		if temps, _ := filepath.Glob(atomicfile.TempGlob(path)); len(temps) > 0 {
			midSave++
			for _, tmp := range temps {
				if data, err := os.ReadFile(tmp); err == nil {
					if _, err := config.Parse(bytes.NewReader(data)); err != nil {
						tornTemp++ // a write cut short: proof the kill hit mid-write
					}
				}
			}
		}
		if temps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(temps) > 2 {
			t.Fatalf("kill %d: temporary files pile up: %v", done, temps)
		}
	}
	if done < kills/4 {
		t.Fatalf("only %d kills in %v", done, budget)
	}
	// A new writer cleans up what killed ones left.
	if _, err := NewStore(path).Save(cfgs[seen[0]%2]); err != nil {
		t.Fatal(err)
	}
	if temps, _ := filepath.Glob(filepath.Join(dir, ".*.tmp-*")); len(temps) > 0 {
		t.Fatalf("temporary files left after a save: %v", temps)
	}
	t.Logf("%d kills in %v: file held A %d times, B %d times; %d kills landed between creating and renaming the temporary file, %d of them left it incomplete",
		done, time.Since(deadline.Add(-budget)).Round(time.Millisecond), seen[0], seen[1], midSave, tornTemp)
}

// helperTB lets powerCutConfigs run in the helper process.
type helperTB struct{ testing.TB }

func (helperTB) Helper() {}
func (helperTB) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(5)
}
