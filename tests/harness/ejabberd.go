package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// ejabberdctlPath is the Debian ejabberdctl script.
const ejabberdctlPath = "/usr/sbin/ejabberdctl"

// erlNode identifies the Erlang node of an ejabberd instance.
type erlNode struct {
	name     string // full node name, e.g. jnejb0123abcd@localhost
	cookie   string
	distPort uint16 // distribution listener (no epmd)
}

// StartEjabberd starts a private ejabberd 23.01 (`ejabberdctl foreground`,
// running as root from a patched copy of ejabberdctl) with a c2s listener
// for ServerDomain and a component listener for opt.ComponentDomain, waits
// until it is ready (listeners accept and `ejabberdctl status` succeeds)
// and registers opt.Users. Each instance has its own Erlang node name,
// distribution port and cookie, and keeps its Mnesia database in Dir, so
// Start after Stop or Kill restarts with the same users. The caller must
// Stop or Close the server.
func StartEjabberd(ctx context.Context, opt ServerOptions) (*XMPPServer, error) {
	s, err := newServer("ejabberd", opt)
	if err != nil {
		return nil, err
	}
	if err := s.setupEjabberd(); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	if err := s.Start(ctx); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	if err := s.registerEjabberdUsers(ctx, opt.Users, opt.Bulk); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// setupEjabberd writes the configuration and the patched ejabberdctl.
func (s *XMPPServer) setupEjabberd() error {
	for _, d := range []string{"log", "db"} {
		if err := os.MkdirAll(filepath.Join(s.Dir, d), 0o755); err != nil {
			return fmt.Errorf("ejabberd dir: %w", err)
		}
	}
	data := s.configData()
	data.Node = "jnejb" + randomHex(6)
	data.Cookie = randomHex(16)
	free, err := freeTCPPorts(s.Netns, 1, s.C2S.Port(), s.Component.Port()) // Erlang distribution
	if err != nil {
		return err
	}
	port := free[0]
	data.DistPort = port
	s.erl = &erlNode{name: data.Node + "@localhost", cookie: data.Cookie, distPort: port}
	files := map[string]string{"ejabberd.yml": "ejabberd.yml.tmpl", "ejabberdctl.cfg": "ejabberdctl.cfg.tmpl", "inetrc": "inetrc.tmpl"}
	for file, tmpl := range files {
		if err := writeTemplate(filepath.Join(s.Dir, file), tmpl, data); err != nil {
			return err
		}
	}
	ctl := filepath.Join(s.Dir, "ejabberdctl")
	if err := writePatchedEjabberdctl(ctl); err != nil {
		return err
	}
	s.logFiles = []string{
		filepath.Join(s.Dir, "stdout.log"),
		filepath.Join(s.Dir, "log", "ejabberd.log"),
		filepath.Join(s.Dir, "log", "error.log"),
	}
	// ejabberd resolves s2s targets (e.g. the component domain while no
	// component is connected) with getaddrinfo, which would query the
	// host's DNS server. Give it a private /etc/resolv.conf pointing at
	// loopback (a mount namespace; unshare and sh exec, keeping the PID).
	resolv := filepath.Join(s.Dir, "resolv.conf")
	if err := os.WriteFile(resolv, []byte("# loopback only: no DNS traffic leaves the test\nnameserver 127.0.0.1\n"), 0o644); err != nil {
		return fmt.Errorf("write resolv.conf: %w", err)
	}
	s.launch = func() (*process, error) {
		args := append([]string{"--mount", "--propagation", "private",
			"sh", "-c", `mount --bind "$0" /etc/resolv.conf && exec "$@"`, resolv, ctl},
			s.ejabberdctlArgs("foreground")...)
		return s.startLogged("unshare", args...)
	}
	s.check = func(ctx context.Context) error {
		_, err := s.EjabberdCtl(ctx, "status")
		return err
	}
	return nil
}

// writePatchedEjabberdctl writes a copy of the Debian ejabberdctl that
// runs as the current user (INSTALLUSER emptied: no su, no chown) and execs
// Erlang, so `ejabberdctl foreground` ends up as the very process the
// harness started (and can stop by PID).
func writePatchedEjabberdctl(path string) error {
	src, err := os.ReadFile(ejabberdctlPath)
	if err != nil {
		return fmt.Errorf("read ejabberdctl: %w", err)
	}
	patches := []struct{ old, new string }{
		{"\nINSTALLUSER=ejabberd\n", "\nINSTALLUSER=\n"},
		{`as_current_user) "$@" ;;`, `as_current_user) exec "$@" ;;`},
	}
	for _, p := range patches {
		if n := bytes.Count(src, []byte(p.old)); n != 1 {
			return fmt.Errorf("patch %s: found %q %d times, want 1 (ejabberd version changed?)", ejabberdctlPath, p.old, n)
		}
		src = bytes.Replace(src, []byte(p.old), []byte(p.new), 1)
	}
	if err := os.WriteFile(path, src, 0o755); err != nil {
		return fmt.Errorf("write ejabberdctl: %w", err)
	}
	return nil
}

func (s *XMPPServer) ejabberdctlArgs(args ...string) []string {
	return append([]string{
		"--config-dir", s.Dir, "--logs", filepath.Join(s.Dir, "log"), "--spool", filepath.Join(s.Dir, "db"),
	}, args...)
}

// EjabberdCtl runs `ejabberdctl args...` against this ejabberd instance (in
// its namespace) and returns its standard output. It fails for Prosody.
// Each call boots an Erlang VM (about 0.5 s).
func (s *XMPPServer) EjabberdCtl(ctx context.Context, args ...string) (string, error) {
	if s.erl == nil {
		return "", fmt.Errorf("ejabberdctl on a %s server", s.Kind)
	}
	return s.run(ctx, filepath.Join(s.Dir, "ejabberdctl"), s.ejabberdctlArgs(args...)...)
}

// registerEjabberdUsers registers users and bulk with one RPC (one VM
// boot instead of one ejabberdctl per user; bulk's names are made by the
// RPC, not spelt out on its command line) and then makes the database durable: Mnesia
// keeps ejabberd's disc_only tables in dets files whose writes are delayed
// by up to 3 s, so without a sync a Kill soon after registration loses
// users.
func (s *XMPPServer) registerEjabberdUsers(ctx context.Context, users map[string]string, bulk BulkUsers) error {
	names := make([]string, 0, len(users))
	for u := range users {
		names = append(names, u)
	}
	sort.Strings(names)
	var pairs []string
	for _, u := range names {
		pairs = append(pairs, fmt.Sprintf("{%s, %s}", erlBinary(u), erlBinary(users[u])))
	}
	expr := fmt.Sprintf(`N = '%s',
Reg = fun({U, P}) ->
    case rpc:call(N, ejabberd_auth, try_register, [U, %s, P]) of
        ok -> ok;
        {error, exists} -> ok;
        E -> io:format(standard_error, "register ~s: ~p~n", [U, E]), halt(1)
    end
end,
lists:foreach(Reg, [%s]),
lists:foreach(fun(I) -> Reg({<<%s/binary, (integer_to_binary(I))/binary>>, %s}) end, lists:seq(0, %d - 1)),
ok = rpc:call(N, mnesia, sync_log, []),
Sync = fun(T) ->
    case rpc:call(N, mnesia, table_info, [T, storage_type]) of
        disc_only_copies -> ok = rpc:call(N, dets, sync, [T]);
        _ -> ok
    end
end,
lists:foreach(Sync, rpc:call(N, mnesia, system_info, [local_tables])),
halt(0).`, s.erl.name, erlBinary(s.Domain), strings.Join(pairs, ", "),
		erlBinary(bulk.Prefix), erlBinary(bulk.Password), bulk.Count)
	if _, err := s.erlEval(ctx, expr); err != nil {
		return fmt.Errorf("register ejabberd users: %w", err)
	}
	return nil
}

// erlEval evaluates expr on a short-lived hidden Erlang node that can
// reach this ejabberd's node (same cookie, distribution port, namespace).
func (s *XMPPServer) erlEval(ctx context.Context, expr string) (string, error) {
	return s.run(ctx, "erl",
		"-sname", "jnrpc"+randomHex(4)+"@localhost", "-hidden", "-noshell", "-noinput",
		"-setcookie", s.erl.cookie, "-kernel", "inet_dist_use_interface", "{127,0,0,1}",
		"-erl_epmd_port", fmt.Sprint(s.erl.distPort), "-start_epmd", "false", "-dist_listen", "false",
		"-eval", expr)
}

// run runs a helper command in the server's namespace and directory and
// returns its stdout; the error includes stderr.
func (s *XMPPServer) run(ctx context.Context, name string, args ...string) (string, error) {
	argv := append([]string{name}, args...)
	if s.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", s.Netns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = s.Dir
	cmd.Env = append(os.Environ(), "ERL_INETRC="+filepath.Join(s.Dir, "inetrc"), "ERL_CRASH_DUMP_BYTES=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %w: %s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out), nil
}

// erlBinary quotes s as an Erlang binary literal.
func erlBinary(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `<<"` + r.Replace(s) + `"/utf8>>`
}
