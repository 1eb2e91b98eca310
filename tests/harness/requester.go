package harness

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	_ "embed" // requester.py
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed requester.py
var requesterScript []byte

// DefaultPython is the interpreter that has python3-slixmpp (Debian's).
const DefaultPython = "/usr/bin/python3"

// Requester describes a third-party XEP-0278 requester: an XMPP client
// (python3-slixmpp, requester.py) that asks the relay for channels.
type Requester struct {
	Addr     netip.AddrPort // c2s address of the XMPP server
	Domain   string         // user domain (default "localhost")
	User     string         // user name (JID local part)
	Password string
	Relay    string // default relay JID (default "relay.localhost")
	Netns    string // namespace to run in ("" = current)
	Python   string // interpreter (default DefaultPython)
}

// RequestArgs describes what the requester does after logging in.
type RequestArgs struct {
	Relay     string        // JID to send requests to (default Requester.Relay)
	Protocol  string        // "udp" (default), "tcp" or "none" (omit the attribute)
	Legacy    bool          // send <candidate/> instead of <channel/>
	Raw       string        // raw payload element sent instead of a channel request
	Set       bool          // send the IQ as a set (default get)
	Count     int           // number of sequential requests (default 1)
	IQTimeout time.Duration // per request (default 10 s)
	// WaitEvents > 0 keeps the session open after the requests until that
	// many #event IQ sets arrived (each is answered) or Timeout passed.
	WaitEvents int
	Timeout    time.Duration // event wait (default 10 s)
}

// Outcome is one JSON line printed by the requester.
type Outcome struct {
	// Type is "online" (logged in, JID set), "result", "error",
	// "timeout" (Phase "iq" or "events"), "event", "fatal" (login or
	// connection failed, Text says why), "done" (finished normally) or
	// "invalid" (a stdout line that is not JSON, in Text).
	Type      string            `json:"type"`
	JID       string            `json:"jid,omitempty"`        // online: full JID bound
	Element   string            `json:"element,omitempty"`    // result, or error echoing the request: "channel" or "candidate"
	Channel   map[string]string `json:"channel,omitempty"`    // result, or error echoing the request: attributes of that element
	Children  []string          `json:"children,omitempty"`   // error: local names of the IQ's child elements, in order
	Payload   string            `json:"payload,omitempty"`    // result without a channel element: raw children
	Condition string            `json:"condition,omitempty"`  // error: defined condition
	ErrorType string            `json:"error_type,omitempty"` // error: cancel, wait, modify...
	Text      string            `json:"text,omitempty"`       // error or fatal text
	Phase     string            `json:"phase,omitempty"`      // timeout: "iq" or "events"
	Attrs     map[string]string `json:"attrs,omitempty"`      // event: attributes of the event channel
	From      string            `json:"from,omitempty"`       // event: sender JID

	// Services are the <service/> elements' attributes of a XEP-0215
	// <services/> or <credentials/> result (see ExternalServices).
	Services []map[string]string `json:"services,omitempty"`
}

// RelayAddrs returns the relay's two transport addresses from a channel
// result: host:localport (caller side) and host:remoteport (callee side).
func (o Outcome) RelayAddrs() (local, remote netip.AddrPort, err error) {
	if o.Type != "result" || o.Channel == nil {
		return local, remote, fmt.Errorf("not a channel result: %+v", o)
	}
	host, err := netip.ParseAddr(o.Channel["host"])
	if err != nil {
		return local, remote, fmt.Errorf("channel host: %w", err)
	}
	lp, err := strconv.ParseUint(o.Channel["localport"], 10, 16)
	if err != nil {
		return local, remote, fmt.Errorf("channel localport: %w", err)
	}
	rp, err := strconv.ParseUint(o.Channel["remoteport"], 10, 16)
	if err != nil {
		return local, remote, fmt.Errorf("channel remoteport: %w", err)
	}
	return netip.AddrPortFrom(host, uint16(lp)), netip.AddrPortFrom(host, uint16(rp)), nil
}

// Run logs in, performs args and returns the outcomes (without "online"
// and "done"). It fails if the requester could not log in or did not
// finish normally. ctx bounds the whole run.
func (r Requester) Run(ctx context.Context, args RequestArgs) ([]Outcome, error) {
	rr, err := r.Start(ctx, args)
	if err != nil {
		return nil, err
	}
	var outs []Outcome
	done := false
	for o := range rr.Outcomes {
		if o.Type == "done" {
			done = true
			continue
		}
		outs = append(outs, o)
	}
	if err := rr.Wait(); err != nil {
		return outs, err
	}
	if !done {
		return outs, fmt.Errorf("requester ended without done line; stderr:\n%s", rr.Stderr())
	}
	return outs, nil
}

// RunningRequester is a requester process started by Requester.Start.
type RunningRequester struct {
	// JID is the full JID the requester is logged in as.
	JID string
	// Outcomes delivers the outcomes after "online", including "done";
	// it is closed when the process's output ends.
	Outcomes <-chan Outcome

	cmd    *exec.Cmd
	script string
	stderr *lockedBuffer
	waited chan struct{}
	err    error
}

// Start launches the requester and returns once it is logged in (its
// "online" line), so JID is known; outcomes then arrive on Outcomes. The
// process is killed when ctx is done; call Wait or Stop to reap it.
func (r Requester) Start(ctx context.Context, args RequestArgs) (*RunningRequester, error) {
	f, err := os.CreateTemp("", "jnrelay-requester-*.py")
	if err != nil {
		return nil, fmt.Errorf("requester script: %w", err)
	}
	_, werr := f.Write(requesterScript)
	if err := errors.Join(werr, f.Close()); err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("write requester script: %w", err)
	}
	argv := append([]string{r.python(), f.Name()}, r.argv(args)...)
	if r.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", r.Netns}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	if len(args.Raw) > rawArgMax {
		cmd.Stdin = strings.NewReader(args.Raw)
	}
	rr := &RunningRequester{cmd: cmd, script: f.Name(), stderr: &lockedBuffer{}, waited: make(chan struct{})}
	cmd.Stderr = rr.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("requester stdout: %w", err)
	}
	if err := cmd.Start(); err != nil {
		os.Remove(f.Name())
		return nil, fmt.Errorf("start requester: %w", err)
	}
	outs := make(chan Outcome, 256)
	rr.Outcomes = outs
	online := make(chan Outcome, 1)
	go func() {
		rr.read(stdout, online, outs)
		rr.err = cmd.Wait() // only after stdout was read to EOF
		os.Remove(rr.script)
		close(rr.waited)
		close(outs)
	}()
	select {
	case o, ok := <-online:
		if ok && o.Type == "online" {
			rr.JID = o.JID
			return rr, nil
		}
		werr := rr.Stop()
		if ok {
			return nil, errors.Join(fmt.Errorf("requester %s@%s: %s: %s", r.User, r.domain(), o.Type, o.Text), werr)
		}
		return nil, errors.Join(fmt.Errorf("requester exited before login; stderr:\n%s", rr.Stderr()), werr)
	case <-ctx.Done():
		return nil, errors.Join(fmt.Errorf("requester login: %w", ctx.Err()), rr.Stop())
	}
}

// read parses stdout lines until EOF. The first line goes to online, the
// rest to outs; online is closed if the output ends before any line.
func (rr *RunningRequester) read(stdout io.Reader, online chan<- Outcome, outs chan<- Outcome) {
	first := true
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var o Outcome
		if err := json.Unmarshal(sc.Bytes(), &o); err != nil {
			o = Outcome{Type: "invalid", Text: sc.Text()}
		}
		if first {
			first = false
			online <- o
			close(online)
			continue
		}
		outs <- o
	}
	if first {
		close(online)
	}
}

// Next returns the next outcome, or an error if ctx ends or the requester
// exited first.
func (rr *RunningRequester) Next(ctx context.Context) (Outcome, error) {
	select {
	case o, ok := <-rr.Outcomes:
		if !ok {
			return Outcome{}, fmt.Errorf("requester exited; stderr:\n%s", rr.Stderr())
		}
		return o, nil
	case <-ctx.Done():
		return Outcome{}, fmt.Errorf("waiting for requester outcome: %w", ctx.Err())
	}
}

// Wait waits for the process to exit and returns its error (with stderr).
// Unread outcomes are discarded.
func (rr *RunningRequester) Wait() error {
	go func() {
		for range rr.Outcomes { // unblock the reader if nobody reads
		}
	}()
	<-rr.waited
	if rr.err != nil {
		return fmt.Errorf("requester: %w; stderr:\n%s", rr.err, rr.Stderr())
	}
	return nil
}

// Stop kills the requester (by PID) and reaps it.
func (rr *RunningRequester) Stop() error {
	select {
	case <-rr.waited:
		return nil
	default:
	}
	if err := rr.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill requester: %w", err)
	}
	_ = rr.Wait() // killed: the exit error is expected
	return nil
}

// Stderr returns what the requester wrote to stderr so far.
func (rr *RunningRequester) Stderr() string { return rr.stderr.String() }

func (r Requester) python() string {
	if r.Python != "" {
		return r.Python
	}
	return DefaultPython
}

func (r Requester) domain() string {
	if r.Domain != "" {
		return r.Domain
	}
	return ServerDomain
}

// rawArgMax is the largest raw payload passed as an argument: Linux
// limits one argument to 128 KiB (MAX_ARG_STRLEN); larger ones go through
// standard input.
const rawArgMax = 64 << 10

// argv returns the requester.py arguments for args.
func (r Requester) argv(a RequestArgs) []string {
	relay := cmp.Or(a.Relay, r.Relay, DefaultComponentDomain)
	argv := []string{
		"--jid", r.User + "@" + r.domain(), "--password", r.Password,
		"--host", r.Addr.Addr().String(), "--port", strconv.Itoa(int(r.Addr.Port())),
		"--relay", relay, "--protocol", cmp.Or(a.Protocol, "udp"),
		"--count", strconv.Itoa(max(a.Count, 1)),
	}
	if a.Set {
		argv = append(argv, "--set")
	}
	if a.Legacy {
		argv = append(argv, "--legacy")
	}
	switch {
	case len(a.Raw) > rawArgMax:
		argv = append(argv, "--raw", "-") // read from standard input (see Start)
	case a.Raw != "":
		argv = append(argv, "--raw", a.Raw)
	}
	if a.IQTimeout > 0 {
		argv = append(argv, "--iq-timeout", seconds(a.IQTimeout))
	}
	if a.WaitEvents > 0 {
		argv = append(argv, "--wait-events", strconv.Itoa(a.WaitEvents))
	}
	if a.Timeout > 0 {
		argv = append(argv, "--timeout", seconds(a.Timeout))
	}
	return argv
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) }

// lockedBuffer is a goroutine-safe bytes.Buffer for a child's stderr.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.TrimSpace(l.b.String())
}
