package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jnrelay/jnrelay/tests/harness"
)

// rtpengineC is Sipwise rtpengine (Debian rtpengine-daemon), userspace only
// (--table=-1: no kernel forwarding module), one worker thread. Each
// channel is one call set up over its ng control protocol (bencoded
// dictionaries over UDP): an offer carrying side a's endpoint in its SDP and
// an answer carrying side b's; the SDP rtpengine returns for each names the
// port the *other* side must send to. rtpengine then forwards RTP between
// the two, answering each side from the port that side sends to.
var rtpengineC = &contender{key: "rtpengine", name: "rtpengine (userspace)",
	available: func() string {
		if _, err := exec.LookPath("rtpengine"); err != nil {
			return "rtpengine is not installed (tests/bench/deps.sh installs rtpengine-daemon)"
		}
		return ""
	},
	start: startRtpengine,
}

const ngAddr = "127.0.0.1:2223" // inside the relay namespace

func startRtpengine(ctx context.Context, _ testing.TB, e *env, n int) (*relay, error) {
	p, err := startProc(ctx, relayCore, e.topo.nsR, nil, "rtpengine",
		"--config-file=none", "--foreground", "--log-stderr", "--log-level=3",
		"--table=-1", "--num-threads=1", "--interface="+relayAddr, "--listen-ng="+ngAddr,
		"--port-min="+strconv.Itoa(relayPortMin), "--port-max="+strconv.Itoa(relayPortMax),
		// Benchmark calls must not time out between set-up and the end of
		// a step.
		"--timeout=3600", "--silent-timeout=3600", "--offer-timeout=3600", "--delete-delay=0")
	if err != nil {
		return nil, err
	}
	r := &relay{proc: p}
	fail := func(err error) (*relay, error) {
		_, _ = p.stop(10 * time.Second)
		return nil, err
	}
	conn, err := harness.ListenUDPIn(e.topo.nsR, netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		return fail(err)
	}
	defer conn.Close()
	ng := &ngClient{conn: conn, to: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(ngAddr))}
	// Wait until the control socket answers.
	up := time.Now().Add(20 * time.Second)
	for {
		res, err := ng.call(map[string]any{"command": "ping"}, 200*time.Millisecond)
		if err == nil && res["result"] == "pong" {
			break
		}
		if time.Now().After(up) {
			return fail(fmt.Errorf("rtpengine control never answered ping: %v; stderr: %s", err, p.stderr))
		}
	}
	t0 := time.Now()
	for i := range n {
		a, b := endpoint(srcA, portBaseA, i), endpoint(srcB, portBaseB, i)
		callID, fromTag, toTag := fmt.Sprintf("bench-%d", i), fmt.Sprintf("a%d", i), fmt.Sprintf("b%d", i)
		offer, err := ng.call(map[string]any{"command": "offer", "call-id": callID, "from-tag": fromTag,
			"sdp": sdp(a), "replace": []any{"origin", "session-connection"}, "ICE": "remove"}, 2*time.Second)
		if err != nil {
			return fail(fmt.Errorf("rtpengine offer %d: %w", i, err))
		}
		toB, err := sdpMedia(offer)
		if err != nil {
			return fail(fmt.Errorf("rtpengine offer %d: %w", i, err))
		}
		answer, err := ng.call(map[string]any{"command": "answer", "call-id": callID, "from-tag": fromTag, "to-tag": toTag,
			"sdp": sdp(b), "replace": []any{"origin", "session-connection"}, "ICE": "remove"}, 2*time.Second)
		if err != nil {
			return fail(fmt.Errorf("rtpengine answer %d: %w", i, err))
		}
		toA, err := sdpMedia(answer)
		if err != nil {
			return fail(fmt.Errorf("rtpengine answer %d: %w", i, err))
		}
		// The offer's SDP goes to b: it names where b sends; the answer's
		// goes to a.
		r.targetsA = append(r.targetsA, toA)
		r.targetsB = append(r.targetsB, toB)
	}
	if n > 0 {
		r.allocPerSec = float64(n) / time.Since(t0).Seconds()
	}
	return r, nil
}

// sdp is a minimal audio SDP for one RTP endpoint (PCMU).
func sdp(ep netip.AddrPort) string {
	a := ep.Addr().String()
	return "v=0\r\no=- 1 1 IN IP4 " + a + "\r\ns=bench\r\nc=IN IP4 " + a + "\r\nt=0 0\r\n" +
		"m=audio " + strconv.Itoa(int(ep.Port())) + " RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
}

// sdpMedia extracts the connection address and audio port from an ng
// answer's SDP.
func sdpMedia(res map[string]any) (netip.AddrPort, error) {
	if res["result"] != "ok" {
		return netip.AddrPort{}, fmt.Errorf("result %v: %v", res["result"], res["error-reason"])
	}
	body, _ := res["sdp"].(string)
	var addr netip.Addr
	var port int
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimSpace(l)
		if v, ok := strings.CutPrefix(l, "c=IN IP4 "); ok {
			addr, _ = netip.ParseAddr(strings.Fields(v)[0])
		}
		if v, ok := strings.CutPrefix(l, "m=audio "); ok {
			port, _ = strconv.Atoi(strings.Fields(v)[0])
		}
	}
	if !addr.IsValid() || port <= 0 || port > 65535 {
		return netip.AddrPort{}, fmt.Errorf("no address or port in SDP %q", body)
	}
	return netip.AddrPortFrom(addr, uint16(port)), nil
}

// ngClient speaks rtpengine's ng protocol: "COOKIE BENCODED-DICT" per
// datagram, the reply echoing the cookie.
type ngClient struct {
	conn *net.UDPConn
	to   *net.UDPAddr
	seq  int
	buf  [65536]byte
}

func (c *ngClient) call(req map[string]any, timeout time.Duration) (map[string]any, error) {
	c.seq++
	cookie := fmt.Sprintf("b%d", c.seq)
	var msg bytes.Buffer
	msg.WriteString(cookie + " ")
	bencode(&msg, req)
	if _, err := c.conn.WriteToUDP(msg.Bytes(), c.to); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	for {
		if err := c.conn.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		n, _, err := c.conn.ReadFromUDP(c.buf[:])
		if err != nil {
			return nil, err
		}
		got, body, ok := bytes.Cut(c.buf[:n], []byte(" "))
		if !ok || string(got) != cookie {
			continue // a late answer to an earlier try
		}
		v, rest, err := bdecode(body)
		if err != nil || len(rest) != 0 {
			return nil, fmt.Errorf("bad ng reply %q: %v", body, err)
		}
		d, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("ng reply is not a dictionary: %q", body)
		}
		return d, nil
	}
}

// bencode writes v (string, int, []any, map[string]any) in bencoding.
func bencode(b *bytes.Buffer, v any) {
	switch x := v.(type) {
	case string:
		b.WriteString(strconv.Itoa(len(x)) + ":" + x)
	case int:
		b.WriteString("i" + strconv.Itoa(x) + "e")
	case []any:
		b.WriteByte('l')
		for _, e := range x {
			bencode(b, e)
		}
		b.WriteByte('e')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys) // bencoding wants sorted keys
		b.WriteByte('d')
		for _, k := range keys {
			bencode(b, k)
			bencode(b, x[k])
		}
		b.WriteByte('e')
	default:
		panic(fmt.Sprintf("bencode: unsupported %T", v))
	}
}

// bdecode parses one bencoded value from the front of b.
func bdecode(b []byte) (any, []byte, error) {
	if len(b) == 0 {
		return nil, nil, errors.New("unexpected end")
	}
	switch c := b[0]; {
	case c == 'i':
		end := bytes.IndexByte(b, 'e')
		if end < 0 {
			return nil, nil, errors.New("unterminated integer")
		}
		n, err := strconv.Atoi(string(b[1:end]))
		return n, b[end+1:], err
	case c == 'l':
		var out []any
		b = b[1:]
		for len(b) > 0 && b[0] != 'e' {
			v, rest, err := bdecode(b)
			if err != nil {
				return nil, nil, err
			}
			out, b = append(out, v), rest
		}
		if len(b) == 0 {
			return nil, nil, errors.New("unterminated list")
		}
		return out, b[1:], nil
	case c == 'd':
		out := map[string]any{}
		b = b[1:]
		for len(b) > 0 && b[0] != 'e' {
			k, rest, err := bdecode(b)
			if err != nil {
				return nil, nil, err
			}
			ks, ok := k.(string)
			if !ok {
				return nil, nil, errors.New("dictionary key is not a string")
			}
			v, rest, err := bdecode(rest)
			if err != nil {
				return nil, nil, err
			}
			out[ks], b = v, rest
		}
		if len(b) == 0 {
			return nil, nil, errors.New("unterminated dictionary")
		}
		return out, b[1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(b, ':')
		if colon < 0 {
			return nil, nil, errors.New("bad string length")
		}
		n, err := strconv.Atoi(string(b[:colon]))
		if err != nil || n < 0 || colon+1+n > len(b) {
			return nil, nil, errors.New("bad string length")
		}
		return string(b[colon+1 : colon+1+n]), b[colon+1+n:], nil
	default:
		return nil, nil, fmt.Errorf("unexpected byte %q", c)
	}
}
