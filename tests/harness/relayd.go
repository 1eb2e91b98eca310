package harness

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/relayd/daemon"
)

// Relayd is a relayd process started by the harness, with its JSON log
// records collected so a test can await events ("xmpp component online",
// "channel ended") instead of sleeping.
type Relayd struct {
	ConfigPath string
	APISocket  string // the provisioning API's unix socket

	proc *process
	out  *io.PipeWriter

	mu      sync.Mutex
	records []LogRecord
	raw     strings.Builder
	changed chan struct{} // closed and replaced on every new line
	drained chan struct{} // closed once every line of output is in records
}

// LogRecord is one JSON log line of relayd.
type LogRecord map[string]any

// Msg is the record's message.
func (r LogRecord) Msg() string { s, _ := r["msg"].(string); return s }

// Str returns a string attribute.
func (r LogRecord) Str(key string) string { s, _ := r[key].(string); return s }

// Int returns a numeric attribute (JSON numbers decode as float64).
func (r LogRecord) Int(key string) int64 { f, _ := r[key].(float64); return int64(f) }

// StartRelayd writes config (marshalled to JSON, log format forced to
// json) into dir and starts bin with it, in namespace ns ("" = current).
// config is typically a config.Config.
func StartRelayd(bin, ns, dir string, config any) (*Relayd, error) {
	return StartRelaydArgs(bin, ns, dir, config)
}

// StartRelaydArgs is StartRelayd with extra command-line flags for relayd
// (e.g. "-api-tcp", "127.0.0.1:8787"; the token is then in
// dir/api-token).
// A nil config starts relayd from the relayd.json already in dir.
func StartRelaydArgs(bin, ns, dir string, config any, extra ...string) (*Relayd, error) {
	return startRelayd(-1, bin, ns, dir, config, extra)
}

// StartRelaydAs is StartRelaydArgs with relayd running as uid (and gid
// uid) without any capability — none permitted, effective, inheritable
// or ambient, an empty bounding set, no_new_privs — as the hardened
// packages run it. dir and its files are given to uid; bin must be
// reachable by it.
func StartRelaydAs(uid int, bin, ns, dir string, config any, extra ...string) (*Relayd, error) {
	return startRelayd(uid, bin, ns, dir, config, extra)
}

func startRelayd(uid int, bin, ns, dir string, config any, extra []string) (*Relayd, error) {
	path := filepath.Join(dir, "relayd.json")
	if config != nil {
		doc, err := json.Marshal(config)
		if err != nil {
			return nil, fmt.Errorf("relayd config: %w", err)
		}
		var m map[string]any
		if err := json.Unmarshal(doc, &m); err != nil {
			return nil, err
		}
		m["log"] = map[string]any{"level": "debug", "format": "json"}
		if err := placeFiles(dir, m); err != nil {
			return nil, err
		}
		doc, _ = json.MarshalIndent(m, "", "  ")
		if err := os.WriteFile(path, doc, 0o600); err != nil {
			return nil, err
		}
	}
	pr, pw := io.Pipe()
	r := &Relayd{ConfigPath: path, APISocket: filepath.Join(dir, "api.sock"), out: pw, changed: make(chan struct{}), drained: make(chan struct{})}
	go r.collect(pr)
	// The API socket and token live in dir: /run is shared by every
	// namespace, so several relays must not share a socket path.
	args := append([]string{"-config", path, "-api-socket", filepath.Join(dir, "api.sock"), "-state-dir", dir}, extra...)
	if uid >= 0 {
		if err := chownTree(dir, uid); err != nil {
			pw.Close()
			return nil, err
		}
		id := strconv.Itoa(uid)
		args = append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", "--inh-caps=-all", "--ambient-caps=-all",
			"--bounding-set=-all", "--no-new-privs", bin}, args...)
		bin = "setpriv"
	}
	p, err := startProcess(netnsCommand(ns, bin, args...), pw)
	if err != nil {
		pw.Close()
		return nil, err
	}
	r.proc = p
	go func() {
		<-p.done
		pw.Close() // ends collect once the output is drained
	}()
	return r, nil
}

func (r *Relayd) collect(out io.Reader) {
	defer close(r.drained)
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		var rec LogRecord
		r.mu.Lock()
		r.raw.WriteString(line + "\n")
		if json.Unmarshal([]byte(line), &rec) == nil {
			r.records = append(r.records, rec)
		}
		close(r.changed)
		r.changed = make(chan struct{})
		r.mu.Unlock()
	}
	io.Copy(io.Discard, out)
}

// WaitLog waits until the n-th (1-based) record with message msg that
// satisfies match (nil = any) has been logged, and returns it. It fails
// early if relayd exits.
func (r *Relayd) WaitLog(ctx context.Context, msg string, n int, match func(LogRecord) bool) (LogRecord, error) {
	for {
		r.mu.Lock()
		changed := r.changed
		r.mu.Unlock()
		if rec, ok := r.find(msg, n, match); ok {
			return rec, nil
		}
		select {
		case <-changed:
		case <-r.drained:
			// relayd exited and its whole output is in: one last look.
			if rec, ok := r.find(msg, n, match); ok {
				return rec, nil
			}
			return nil, fmt.Errorf("relayd exited (%v) before logging %q #%d", r.proc.err, msg, n)
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for relayd log %q #%d: %w", msg, n, ctx.Err())
		}
	}
}

// find returns the n-th (1-based) record with message msg that satisfies
// match (nil = any), if it has been logged.
func (r *Relayd) find(msg string, n int, match func(LogRecord) bool) (LogRecord, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := 0
	for _, rec := range r.records {
		if rec.Msg() == msg && (match == nil || match(rec)) {
			seen++
			if seen == n {
				return rec, true
			}
		}
	}
	return nil, false
}

// Count returns how many records with message msg satisfy match.
func (r *Relayd) Count(msg string, match func(LogRecord) bool) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, rec := range r.records {
		if rec.Msg() == msg && (match == nil || match(rec)) {
			n++
		}
	}
	return n
}

// Logs returns relayd's whole output so far.
func (r *Relayd) Logs() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.raw.String()
}

// Stop sends SIGINT (stop at once: SIGTERM would first drain live calls
// for channel.drain_seconds) and waits (bounded) for a clean exit; it
// returns the process's exit error, nil for status 0.
func (r *Relayd) Stop() error {
	if err := r.proc.stopWith(syscall.SIGINT, stopGrace); err != nil {
		return err
	}
	return r.proc.err
}

// Wait waits until relayd exits on its own (after a signal the test sent)
// and returns its exit error, nil for status 0; ctx bounds the wait.
func (r *Relayd) Wait(ctx context.Context) error {
	select {
	case <-r.proc.done:
		return r.proc.err
	case <-ctx.Done():
		return fmt.Errorf("relayd still running: %w", ctx.Err())
	}
}

// Status reads relayd's status document through its API socket.
func (r *Relayd) Status(ctx context.Context) (daemon.Status, error) {
	api := provision.NewClient(r.APISocket)
	defer api.Close()
	raw, err := api.Status(ctx)
	if err != nil {
		return daemon.Status{}, err
	}
	var st daemon.Status
	if err := json.Unmarshal(raw, &st); err != nil {
		return st, fmt.Errorf("status %s: %w", raw, err)
	}
	return st, nil
}

// PID is relayd's process id (ip netns exec replaces itself with relayd).
func (r *Relayd) PID() int { return r.proc.pid() }

// Kill stops relayd with SIGKILL.
func (r *Relayd) Kill() error { return r.proc.kill() }

// Exited reports whether relayd has exited.
func (r *Relayd) Exited() bool { return r.proc.exited() }

// Signal sends sig to relayd (e.g. SIGHUP to reload its configuration).
func (r *Relayd) Signal(sig os.Signal) error { return r.proc.cmd.Process.Signal(sig) }

// WriteConfig replaces relayd's configuration file (as StartRelayd wrote
// it: log format forced to json) without telling relayd; send SIGHUP.
func (r *Relayd) WriteConfig(config any) error {
	doc, err := json.Marshal(config)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(doc, &m); err != nil {
		return err
	}
	m["log"] = map[string]any{"level": "debug", "format": "json"}
	if err := placeFiles(filepath.Dir(r.ConfigPath), m); err != nil {
		return err
	}
	doc, _ = json.MarshalIndent(m, "", "  ")
	tmp := r.ConfigPath + ".tmp"
	if err := os.WriteFile(tmp, doc, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, r.ConfigPath)
}

// placeFiles copies the files a configuration document (m) names from
// elsewhere (a test server's CA, a password file) into dir, the
// configuration's directory, where relayd reads them from (see
// config.ReadFile), and rewrites the document to name the copies. Secrets
// are copied 0600, certificates 0644.
func placeFiles(dir string, m map[string]any) error {
	place := func(obj map[string]any, key, prefix string) error {
		src, _ := obj[key].(string)
		if src == "" || !filepath.IsAbs(src) || filepath.Dir(src) == dir {
			return nil
		}
		data, err := os.ReadFile(src)
		if err != nil {
			return fmt.Errorf("relayd config %s: %w", key, err)
		}
		perm := os.FileMode(0o600)
		if key == "ca_file" {
			perm = 0o644
		}
		name := prefix + "-" + key + "-" + filepath.Base(src)
		dst := filepath.Join(dir, name)
		if err := os.WriteFile(dst, data, perm); err != nil {
			return fmt.Errorf("relayd config %s: %w", key, err)
		}
		if err := os.Chmod(dst, perm); err != nil {
			return fmt.Errorf("relayd config %s: %w", key, err)
		}
		obj[key] = name
		return nil
	}
	services, _ := m["xmpp"].([]any)
	for i, sv := range services {
		svc, ok := sv.(map[string]any)
		if !ok {
			continue
		}
		for _, key := range []string{"secret_file", "password_file", "ca_file"} {
			if err := place(svc, key, fmt.Sprintf("xmpp%d", i)); err != nil {
				return err
			}
		}
	}
	if turn, ok := m["turn"].(map[string]any); ok {
		return place(turn, "secret_file", "turn")
	}
	return nil
}

// chownTree gives dir and everything in it to uid (and gid uid).
func chownTree(dir string, uid int) error {
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, uid)
	})
}
