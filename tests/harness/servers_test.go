package harness

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProsodyAndEjabberdStartStopRestart runs each server in the test
// namespace on loopback and inside a LAN namespace (reached from another
// namespace), and checks: requests to a missing component fail with the
// server's condition, a raw payload round-trips, a stand-in component gets
// channel requests and delivers #event IQs, bad passwords fail, and Kill +
// Start and Stop work.
func TestProsodyAndEjabberdStartStopRestart(t *testing.T) {
	RequireRoot(t)
	for _, kind := range []struct {
		name   string
		start  func(context.Context, ServerOptions) (*XMPPServer, error)
		noComp string // condition when no component is connected
		comm   string // process name of the server
	}{
		{"prosody", StartProsody, "remote-server-timeout", "lua"},
		{"ejabberd", StartEjabberd, "remote-server-not-found", "beam"},
	} {
		for _, inNetns := range []bool{false, true} {
			name := kind.name + "/loopback"
			if inNetns {
				name = kind.name + "/netns"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				// An upper bound: two starts of the server (each up to
				// readyTimeout; ejabberd's took 46 s with four of them
				// starting at once on a busy 2-core machine) and the checks.
				ctx, cancel := context.WithTimeout(context.Background(), 2*readyTimeout+time.Minute)
				defer cancel()
				opt := ServerOptions{Users: map[string]string{"alice": "alicepw", "bob": "bobpw"}, Dir: t.TempDir()}
				clientNS := ""
				if inNetns {
					lan := NewLAN(t, "jnt", "srv", "cli")
					opt.Netns, opt.ListenIP = lan.NS("srv"), lan.Addr("srv")
					clientNS = lan.NS("cli")
				}
				t0 := time.Now()
				srv, err := kind.start(ctx, opt)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					if err := srv.Close(); err != nil {
						t.Error(err)
					}
				})
				t.Logf("%s ready in %v (c2s %v, component %v)", srv.Kind, time.Since(t0), srv.C2S, srv.Component)
				// The PID the harness stops must be the server itself, not a wrapper.
				if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", srv.PID())); err != nil || !strings.HasPrefix(string(comm), kind.comm) {
					t.Errorf("server pid %d is %q (%v), want %s", srv.PID(), comm, err, kind.comm)
				}
				dumpLogs := func() {
					if t.Failed() {
						t.Log(srv.Logs())
					}
				}
				defer dumpLogs()

				alice := srv.Requester("alice", "alicepw")
				alice.Netns = clientNS
				expectNoComponent(ctx, t, alice, kind.noComp)

				outs, err := alice.Run(ctx, RequestArgs{Relay: srv.Domain, Raw: "<query xmlns='http://jabber.org/protocol/disco#info'/>"})
				if err != nil || len(outs) != 1 || outs[0].Type != "result" || !strings.Contains(outs[0].Payload, "disco#info") {
					t.Errorf("disco#info: %+v, %v", outs, err)
				}
				bad := alice
				bad.Password = "wrong"
				if outs, err := bad.Run(ctx, RequestArgs{}); err == nil {
					t.Errorf("bad password: no error, outcomes %+v", outs)
				}

				// A stand-in relay component answers requests and sends an event.
				comp, err := dialFakeRelay(ctx, clientNS, srv.Component, srv.ComponentDomain, srv.Secret)
				if err != nil {
					t.Fatal(err)
				}
				defer comp.Close()
				bob := srv.Requester("bob", "bobpw")
				bob.Netns = clientNS
				rr, err := bob.Start(ctx, RequestArgs{Legacy: true, Protocol: "none", WaitEvents: 1, Timeout: 20 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				defer rr.Stop()
				o, err := rr.Next(ctx)
				if err != nil {
					t.Fatal(err)
				}
				local, remote, err := o.RelayAddrs()
				if err != nil || o.Element != "candidate" || local.Port() != 40000 || remote.Port() != 40002 {
					t.Fatalf("channel result %+v: %v", o, err)
				}
				if req := <-comp.requests; !strings.Contains(req, "<candidate") || strings.Contains(req, "protocol=") {
					t.Errorf("component got request %s", req)
				}
				if err := comp.sendEvent(rr.JID, "killed"); err != nil {
					t.Fatal(err)
				}
				if o, err := rr.Next(ctx); err != nil || o.Type != "event" || o.Attrs["event"] != "killed" || o.From != srv.ComponentDomain {
					t.Fatalf("event: %+v, %v", o, err)
				}
				if o, err := rr.Next(ctx); err != nil || o.Type != "done" {
					t.Fatalf("after event: %+v, %v", o, err)
				}
				if err := rr.Wait(); err != nil {
					t.Fatal(err)
				}

				// Crash, restart on the same ports with the same users.
				pid := srv.PID()
				if err := srv.Kill(); err != nil {
					t.Fatal(err)
				}
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
					t.Fatalf("pid %d still exists after Kill: %v", pid, err)
				}
				t0 = time.Now()
				if err := srv.Start(ctx); err != nil {
					t.Fatal(err)
				}
				t.Logf("restarted in %v", time.Since(t0))
				expectNoComponent(ctx, t, alice, kind.noComp)

				pid = srv.PID()
				t0 = time.Now()
				if err := srv.Stop(); err != nil {
					t.Fatal(err)
				}
				t.Logf("stopped in %v", time.Since(t0))
				if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) || srv.Running() {
					t.Fatalf("pid %d still exists after Stop: %v", pid, err)
				}
			})
		}
	}
}

// expectNoComponent checks that two channel requests to the (absent)
// component both fail with condition cond.
func expectNoComponent(ctx context.Context, t *testing.T, r Requester, cond string) {
	t.Helper()
	outs, err := r.Run(ctx, RequestArgs{Count: 2, IQTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if len(outs) != 2 {
		t.Fatalf("outcomes %+v, want 2", outs)
	}
	for _, o := range outs {
		if o.Type != "error" || o.Condition != cond {
			t.Errorf("outcome %+v, want error %s", o, cond)
		}
	}
}

// fakeRelay is a minimal XEP-0114 component standing in for jnrelay: it
// answers every IQ get with a fixed channel and can send #event IQs.
type fakeRelay struct {
	conn     net.Conn
	domain   string
	requests chan string // raw payloads of the IQ gets received
}

// stanza is any top-level element received on the component stream.
type stanza struct {
	XMLName xml.Name
	Type    string `xml:"type,attr"`
	From    string `xml:"from,attr"`
	ID      string `xml:"id,attr"`
	Inner   string `xml:",innerxml"`
}

func dialFakeRelay(ctx context.Context, ns string, addr netip.AddrPort, domain, secret string) (*fakeRelay, error) {
	conn, err := DialTCPIn(ctx, ns, addr)
	if err != nil {
		return nil, err
	}
	f := &fakeRelay{conn: conn, domain: domain, requests: make(chan string, 16)}
	if err := f.handshake(secret); err != nil {
		conn.Close()
		return nil, fmt.Errorf("component handshake: %w", err)
	}
	return f, nil
}

func (f *fakeRelay) handshake(secret string) error {
	if err := f.conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	_, err := fmt.Fprintf(f.conn, "<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>", f.domain)
	if err != nil {
		return err
	}
	dec := xml.NewDecoder(f.conn)
	var id string
	for id == "" {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "stream" {
			for _, a := range se.Attr {
				if a.Name.Local == "id" {
					id = a.Value
				}
			}
			if id == "" {
				return errors.New("stream header without id")
			}
		}
	}
	sum := sha1.Sum([]byte(id + secret))
	if _, err := fmt.Fprintf(f.conn, "<handshake>%s</handshake>", hex.EncodeToString(sum[:])); err != nil {
		return err
	}
	var s stanza
	if err := dec.Decode(&s); err != nil {
		return err
	}
	if s.XMLName.Local != "handshake" {
		return fmt.Errorf("got <%s>%s instead of <handshake/>", s.XMLName.Local, s.Inner)
	}
	if err := f.conn.SetDeadline(time.Time{}); err != nil {
		return err
	}
	go f.serve(dec)
	return nil
}

// serve answers IQ gets until the connection closes.
func (f *fakeRelay) serve(dec *xml.Decoder) {
	for {
		var s stanza
		if err := dec.Decode(&s); err != nil {
			return
		}
		if s.XMLName.Local != "iq" || s.Type != "get" {
			continue
		}
		select {
		case f.requests <- s.Inner:
		default:
		}
		el := "channel"
		if strings.Contains(s.Inner, "<candidate") {
			el = "candidate"
		}
		reply := fmt.Sprintf("<iq type='result' from='%s' to='%s' id='%s'><%s xmlns='http://jabber.org/protocol/jinglenodes#channel' host='127.0.0.1' localport='40000' remoteport='40002' protocol='udp' id='ch1'/></iq>",
			f.domain, xmlEscape(s.From), xmlEscape(s.ID), el)
		if _, err := io.WriteString(f.conn, reply); err != nil {
			return
		}
	}
}

func (f *fakeRelay) sendEvent(to, event string) error {
	_, err := fmt.Fprintf(f.conn, "<iq type='set' from='%s' to='%s' id='ev1'><channel xmlns='http://jabber.org/protocol/jinglenodes#event' event='%s' id='ch1' time='1'/></iq>",
		f.domain, xmlEscape(to), event)
	return err
}

func (f *fakeRelay) Close() error { return f.conn.Close() }

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
