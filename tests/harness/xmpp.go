package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Defaults shared by the private XMPP servers.
const (
	// ServerDomain is the XMPP domain users are registered on.
	ServerDomain = "localhost"
	// DefaultComponentDomain is the XEP-0114 component domain the relay uses.
	DefaultComponentDomain = "relay.localhost"
	// readyTimeout bounds how long a server may take to become ready.
	// ejabberd's Erlang VM usually boots in 2–3 s, but once took over 30 s
	// in CI while the package tests ran beside it on a 2-core machine.
	readyTimeout = 90 * time.Second
	// stopGrace bounds a graceful stop before SIGKILL.
	stopGrace = 10 * time.Second
)

// ServerOptions configures StartProsody and StartEjabberd. Zero values pick
// sensible defaults.
type ServerOptions struct {
	// Netns is the network namespace to run the server in ("" = the test
	// process's namespace). Its loopback must be up (LAN does that).
	Netns string
	// ListenIP is the address the c2s and component listeners bind to
	// (default 127.0.0.1). Use a LAN address to reach the server from other
	// namespaces.
	ListenIP netip.Addr
	// C2SPort and ComponentPort are the listener ports; 0 picks a free port
	// (inside Netns). They stay the same across Stop/Kill and Start.
	C2SPort, ComponentPort uint16
	// Secret is the component secret (default: random).
	Secret string
	// ComponentDomain is the component's domain (default "relay.localhost").
	ComponentDomain string
	// Users maps user names to passwords, registered at ServerDomain.
	Users map[string]string
	// Dir holds config, data and logs. Default: a new temporary directory,
	// removed by Close. A caller-provided Dir (e.g. t.TempDir()) is kept.
	Dir string
	// Admins are user names (at ServerDomain) made server administrators:
	// on Prosody, only they create publish-subscribe nodes.
	Admins []string
	// Bulk registers many more users than Users is fit for (scale
	// runs): Prefix followed by 0 … Count-1, all with Password.
	Bulk BulkUsers
	// PubsubMaxItems is the most items a publish-subscribe node may hold
	// (0 = the harness default: Prosody's own 256, ejabberd 1,000).
	PubsubMaxItems int
	// PubsubStorage is Prosody's storage backend for its
	// publish-subscribe service ("" = the server's, internal files;
	// "memory"). ejabberd keeps pubsub in Mnesia either way.
	PubsubStorage string
}

// BulkUsers are Count users named Prefix+"0" … Prefix+(Count-1), with one
// password.
type BulkUsers struct {
	Prefix   string
	Count    int
	Password string
}

// Name is the i-th user's name.
func (b BulkUsers) Name(i int) string { return fmt.Sprintf("%s%d", b.Prefix, i) }

// XMPPServer is a private Prosody or ejabberd instance started by the
// harness. Its methods are not safe for concurrent use.
type XMPPServer struct {
	Kind            string         // "prosody" or "ejabberd"
	C2S             netip.AddrPort // client-to-server listener
	Component       netip.AddrPort // XEP-0114 component listener
	Domain          string         // user domain, "localhost"
	ComponentDomain string         // e.g. "relay.localhost"
	Secret          string         // component secret
	Netns           string         // namespace the server runs in ("" = current)
	Dir             string         // config, data and logs
	// CAFile is the PEM CA that signed the server's certificate for
	// Domain: what a TLS client must trust.
	CAFile string
	// PubsubDomain is the server's publish-subscribe service (XEP-0060),
	// "pubsub." + Domain.
	PubsubDomain string

	admins []string
	// pubsubMaxItems is ServerOptions.PubsubMaxItems.
	pubsubMaxItems int
	pubsubStorage  string
	ownsDir        bool
	pki            testPKI
	proc           *process
	logFiles       []string                        // files shown by Logs, the first is the process output
	launch         func() (*process, error)        // starts the server process (without waiting)
	check          func(ctx context.Context) error // extra readiness check once both listeners accept
	erl            *erlNode                        // ejabberd only
}

// newServer fills the common fields and prepares the directory.
func newServer(kind string, opt ServerOptions) (*XMPPServer, error) {
	s := &XMPPServer{
		Kind:            kind,
		Domain:          ServerDomain,
		ComponentDomain: opt.ComponentDomain,
		Secret:          opt.Secret,
		Netns:           opt.Netns,
		Dir:             opt.Dir,
		PubsubDomain:    "pubsub." + ServerDomain,
		admins:          opt.Admins,
		pubsubMaxItems:  opt.PubsubMaxItems,
		pubsubStorage:   opt.PubsubStorage,
	}
	if s.ComponentDomain == "" {
		s.ComponentDomain = DefaultComponentDomain
	}
	if s.Secret == "" {
		s.Secret = randomHex(12)
	}
	ip := opt.ListenIP
	if !ip.IsValid() {
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	var unset []*uint16
	for _, p := range []*uint16{&opt.C2SPort, &opt.ComponentPort} {
		if *p == 0 {
			unset = append(unset, p)
		}
	}
	free, err := freeTCPPorts(opt.Netns, len(unset), opt.C2SPort, opt.ComponentPort)
	if err != nil {
		return nil, err
	}
	for i, p := range unset {
		*p = free[i]
	}
	if opt.C2SPort == opt.ComponentPort {
		return nil, fmt.Errorf("c2s and component port are both %d", opt.C2SPort)
	}
	s.C2S = netip.AddrPortFrom(ip, opt.C2SPort)
	s.Component = netip.AddrPortFrom(ip, opt.ComponentPort)
	if s.Dir == "" {
		dir, err := os.MkdirTemp("", "jnrelay-"+kind+"-")
		if err != nil {
			return nil, fmt.Errorf("create %s dir: %w", kind, err)
		}
		s.Dir, s.ownsDir = dir, true
	}
	// ejabberd does not run as root in its default setup and Erlang wants
	// to read the directory; keep it world-readable.
	if err := os.Chmod(s.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("chmod %s: %w", s.Dir, err)
	}
	// Servers offer STARTTLS (not required) with a certificate from a
	// throwaway CA, so clients can verify it against CAFile.
	pki, err := writeTestPKI(s.Dir, s.Domain)
	if err != nil {
		return nil, fmt.Errorf("%s test certificates: %w", kind, err)
	}
	s.CAFile, s.pki = pki.CAFile, pki
	return s, nil
}

// Start (re)starts the server with the same directory, ports and users and
// waits until it is ready: both listeners accept TCP connections, the
// kind-specific check passes and the process is still alive. Readiness is
// bounded by ctx and readyTimeout (90 s). Start after Stop or Kill keeps all data.
func (s *XMPPServer) Start(ctx context.Context) error {
	if s.proc != nil && !s.proc.exited() {
		return fmt.Errorf("%s already running (pid %d)", s.Kind, s.proc.pid())
	}
	for _, a := range []netip.AddrPort{s.C2S, s.Component} {
		if err := checkPortFree(s.Netns, a); err != nil {
			return fmt.Errorf("start %s: %w", s.Kind, err)
		}
	}
	p, err := s.launch()
	if err != nil {
		return fmt.Errorf("start %s: %w", s.Kind, err)
	}
	s.proc = p
	if err := s.waitReady(ctx); err != nil {
		kerr := s.proc.kill()
		return errors.Join(fmt.Errorf("%s (dir %s) not ready: %w\n%s", s.Kind, s.Dir, err, s.Logs()), kerr)
	}
	return nil
}

// waitReady polls the listeners and the check until ready or deadline.
func (s *XMPPServer) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var lastErr error
	for {
		if s.proc.exited() {
			return fmt.Errorf("process exited: %v", s.proc.err)
		}
		lastErr = dialTCP(ctx, s.Netns, s.C2S)
		if lastErr == nil {
			lastErr = dialTCP(ctx, s.Netns, s.Component)
		}
		if lastErr == nil && s.check != nil {
			lastErr = s.check(ctx)
		}
		if lastErr == nil && !s.proc.exited() {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), lastErr)
		case <-tick.C:
		}
	}
}

// PID returns the server's process ID, or 0 when not running.
func (s *XMPPServer) PID() int {
	if s.proc == nil || s.proc.exited() {
		return 0
	}
	return s.proc.pid()
}

// Running reports whether the server process is alive.
func (s *XMPPServer) Running() bool { return s.PID() != 0 }

// Stop stops the server gracefully (SIGTERM), SIGKILLs it after 10 s and
// returns once the process was reaped. Stopping a stopped server is a no-op.
func (s *XMPPServer) Stop() error {
	if s.proc == nil {
		return nil
	}
	if err := s.proc.stop(stopGrace); err != nil {
		return fmt.Errorf("stop %s: %w", s.Kind, err)
	}
	return nil
}

// Kill SIGKILLs the server right now (a crash) and waits until it is reaped.
func (s *XMPPServer) Kill() error {
	if s.proc == nil {
		return nil
	}
	if err := s.proc.kill(); err != nil {
		return fmt.Errorf("kill %s: %w", s.Kind, err)
	}
	return nil
}

// Close stops the server and removes Dir if the harness created it.
func (s *XMPPServer) Close() error {
	err := s.Stop()
	if s.ownsDir {
		err = errors.Join(err, os.RemoveAll(s.Dir))
	}
	return err
}

// Logs returns the tails of the server's output and log files, for test
// failure messages.
func (s *XMPPServer) Logs() string {
	var b strings.Builder
	for _, f := range s.logFiles {
		fmt.Fprintf(&b, "--- %s\n%s", f, tailFile(f, 8<<10))
	}
	return b.String()
}

// Requester returns a Requester logging in as user on this server, in the
// server's namespace.
func (s *XMPPServer) Requester(user, password string) Requester {
	return Requester{Addr: s.C2S, Domain: s.Domain, User: user, Password: password, Netns: s.Netns, Relay: s.ComponentDomain}
}

// openLog opens (appending) a log file in the server directory.
func (s *XMPPServer) openLog(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(s.Dir, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log: %w", err)
	}
	return f, nil
}

// startLogged starts cmd with its output appended to the first log file.
func (s *XMPPServer) startLogged(cmdName string, args ...string) (*process, error) {
	out, err := s.openLog(filepath.Base(s.logFiles[0]))
	if err != nil {
		return nil, err
	}
	defer out.Close() // the child keeps its own copy of the descriptor
	cmd := netnsCommand(s.Netns, cmdName, args...)
	cmd.Dir = s.Dir
	return startProcess(cmd, out)
}

// randomHex returns n random bytes hex-encoded.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails (crypto/rand panics on failure)
	return hex.EncodeToString(b)
}
