package main

// TURN client mode (-turn), for relaying through a TURN server (coturn,
// relayd's built-in one) the way a WebRTC client would: each flow's
// endpoint makes its own allocation (RFC 8656 Allocate) and binds channel
// 0x4000 to its peer, the other side's
// endpoint of the same flow (ChannelBind, which also installs the
// permission). Media then goes to the server in ChannelData frames (a
// 4-byte header: channel number, length) and comes back the same way; the
// other side sends plain RTP to the allocation's relayed address, which
// this process writes to -turn-relayed for the runner.
//
// Without -turn-user the requests are unauthenticated (coturn runs with
// --no-auth). With -turn-user and -turn-password they use the long-term
// credential mechanism (RFC 8489 9.2), as a browser given TURN REST
// credentials does: one unauthenticated Allocate fetches the server's
// realm and nonce (its 401), then every request carries USERNAME, REALM,
// NONCE and MESSAGE-INTEGRITY; a 438 (stale nonce) answer renews the
// nonce and the request is sent again. One challenge for all flows keeps
// the set-up clear of a server's limit on unauthenticated requests.
//
// Set-up is done socket by socket before the measurement (requests for all
// the socket's flows, then their answers, retried up to three times); it
// allocates freely, the media path does not.

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"time"
	"unsafe"

	"github.com/pion/stun/v4"
	"golang.org/x/sys/unix"
)

const (
	stunMagic          = 0x2112A442
	stunAllocate       = 0x0003
	stunChannelBind    = 0x0009
	stunSuccess        = 0x0100 // class bits of a success response
	stunError          = 0x0110 // and of an error response
	attrChannelNumber  = 0x000C
	attrXorPeerAddress = 0x0012
	attrXorRelayedAddr = 0x0016
	attrReqTransport   = 0x0019
	attrErrorCode      = 0x0009
	turnChannel        = 0x4000 // every allocation binds its single peer to the first channel number
	channelDataHeader  = 4
	challengeFlow      = -1 // the flow index of the transaction that fetches realm and nonce
)

// turnAuth is what the long-term credential mechanism needs: the
// credentials, and the realm and nonce the server gave.
type turnAuth struct {
	user, password string
	realm, nonce   string
}

// turnSetup allocates and binds a channel for every flow, returning the
// relayed address of each.
func (g *gen) turnSetup(peers []unix.RawSockaddrInet4) ([]netip.AddrPort, error) {
	cfg := g.cfg
	relayed := make([]netip.AddrPort, cfg.flows)
	var nonce [4]byte
	if _, err := rand.Read(nonce[:]); err != nil {
		return nil, err
	}
	var auth *turnAuth
	if cfg.turnUser != "" {
		auth = &turnAuth{user: cfg.turnUser, password: cfg.turnPassword}
		if err := g.turnChallenge(nonce, auth); err != nil {
			return nil, err
		}
	}
	for j, fd := range g.socks {
		first, last := j*g.h, min((j+1)*g.h, cfg.flows)
		for _, method := range []uint16{stunAllocate, stunChannelBind} {
			pending := map[int]bool{}
			for i := first; i < last; i++ {
				pending[i] = true
			}
			for try := 0; try < 3 && len(pending) > 0; try++ {
				for i := range pending {
					req, err := stunRequest(method, i, nonce, peers, auth)
					if err != nil {
						return nil, err
					}
					if err := sendFrom(fd, cfg.hosts[i%g.h], &cfg.targets[i], req); err != nil {
						return nil, fmt.Errorf("TURN request for flow %d: %w", i, err)
					}
				}
				if err := g.turnAnswers(fd, method, nonce, auth, pending, relayed, time.Now().Add(2*time.Second)); err != nil {
					return nil, err
				}
			}
			if len(pending) > 0 {
				return nil, fmt.Errorf("TURN server did not answer %d requests (method %#x) on socket %d", len(pending), method, j)
			}
		}
	}
	return relayed, nil
}

// turnChallenge sends one unauthenticated Allocate from flow 0's
// endpoint and takes the realm and nonce from the server's 401 answer.
func (g *gen) turnChallenge(nonce [4]byte, auth *turnAuth) error {
	cfg := g.cfg
	req, err := stunRequest(stunAllocate, challengeFlow, nonce, nil, nil)
	if err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for try := 0; try < 3; try++ {
		if err := sendFrom(g.socks[0], cfg.hosts[0], &cfg.targets[0], req); err != nil {
			return fmt.Errorf("TURN challenge: %w", err)
		}
		for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
			msg, ok, err := recvAnswer(g.socks[0], buf, nonce)
			if err != nil {
				return fmt.Errorf("TURN challenge: %w", err)
			}
			if !ok || int32(binary.BigEndian.Uint32(msg[12:])) != challengeFlow {
				continue
			}
			code, realm, srvNonce := stunErrorOf(msg)
			if code != stun.CodeUnauthorized || realm == "" || srvNonce == "" {
				return fmt.Errorf("TURN challenge: the server answered the unauthenticated Allocate with %#x, error %d (want a 401 with realm and nonce)",
					binary.BigEndian.Uint16(msg), code)
			}
			auth.realm, auth.nonce = realm, srvNonce
			return nil
		}
	}
	return errors.New("TURN challenge: no answer to the unauthenticated Allocate")
}

// recvAnswer reads one datagram from fd and reports whether it is a STUN
// answer to one of our transactions (id starting with nonce).
func recvAnswer(fd int, buf []byte, nonce [4]byte) ([]byte, bool, error) {
	n, _, err := unix.Recvfrom(fd, buf, 0)
	if err != nil {
		if err == unix.EAGAIN || err == unix.EINTR {
			return nil, false, nil
		}
		return nil, false, err
	}
	msg := buf[:n]
	if n < 20 || binary.BigEndian.Uint32(msg[4:]) != stunMagic || [4]byte(msg[8:12]) != nonce {
		return nil, false, nil // not an answer to us (a relayed packet would be ChannelData)
	}
	return msg, true, nil
}

// stunErrorOf decodes an error answer's code, realm and nonce (zero
// values for what it lacks).
func stunErrorOf(msg []byte) (code stun.ErrorCode, realm, nonce string) {
	m := &stun.Message{Raw: append([]byte(nil), msg...)}
	if m.Decode() != nil {
		return 0, "", ""
	}
	var ec stun.ErrorCodeAttribute
	if ec.GetFrom(m) == nil {
		code = ec.Code
	}
	var r stun.Realm
	if r.GetFrom(m) == nil {
		realm = r.String()
	}
	var n stun.Nonce
	if n.GetFrom(m) == nil {
		nonce = n.String()
	}
	return code, realm, nonce
}

// turnAnswers reads answers on fd until every pending flow is answered or
// the deadline passes. With auth, a 438 (stale nonce) answer renews the
// nonce and leaves its flow pending, to be sent again.
func (g *gen) turnAnswers(fd int, method uint16, nonce [4]byte, auth *turnAuth, pending map[int]bool, relayed []netip.AddrPort, deadline time.Time) error {
	buf := make([]byte, 1500)
	for len(pending) > 0 && time.Now().Before(deadline) {
		msg, ok, err := recvAnswer(fd, buf, nonce)
		if err != nil {
			return fmt.Errorf("TURN answer: %w", err)
		}
		if !ok {
			continue
		}
		n := len(msg)
		typ := binary.BigEndian.Uint16(msg[0:])
		flow := int(binary.BigEndian.Uint32(msg[12:]))
		if typ&^0x0110 != method || !pending[flow] {
			continue
		}
		attrs := msg[20:min(n, 20+int(binary.BigEndian.Uint16(msg[2:])))]
		if typ&0x0110 == stunError {
			if code, _, srvNonce := stunErrorOf(msg); auth != nil && code == stun.CodeStaleNonce && srvNonce != "" {
				auth.nonce = srvNonce
				continue
			}
			return fmt.Errorf("TURN method %#x for flow %d refused: %s", method, flow, stunErrorText(attrs))
		}
		if method == stunAllocate {
			ap, err := xorAddress(attrs, attrXorRelayedAddr)
			if err != nil {
				return fmt.Errorf("TURN allocate for flow %d: %w", flow, err)
			}
			relayed[flow] = ap
		}
		delete(pending, flow)
	}
	return nil
}

// stunRequest builds an Allocate or ChannelBind request for flow i,
// authenticated when auth is given. The transaction id carries the nonce,
// the flow index and the method.
func stunRequest(method uint16, i int, nonce [4]byte, peers []unix.RawSockaddrInet4, auth *turnAuth) ([]byte, error) {
	m := new(stun.Message)
	m.Type = stun.NewType(stun.Method(method), stun.ClassRequest)
	copy(m.TransactionID[0:4], nonce[:])
	binary.BigEndian.PutUint32(m.TransactionID[4:], uint32(i))
	binary.BigEndian.PutUint32(m.TransactionID[8:], uint32(method))
	m.WriteHeader()
	if method == stunAllocate {
		m.Add(attrReqTransport, []byte{17, 0, 0, 0}) // UDP
	} else {
		m.Add(attrChannelNumber, []byte{turnChannel >> 8, turnChannel & 0xff, 0, 0})
		p := peers[i]
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&p.Port))[:])
		v := []byte{0, 1, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint16(v[2:], port^(stunMagic>>16))
		binary.BigEndian.PutUint32(v[4:], binary.BigEndian.Uint32(p.Addr[:])^stunMagic)
		m.Add(attrXorPeerAddress, v)
	}
	if auth != nil {
		for _, s := range []stun.Setter{stun.NewUsername(auth.user), stun.NewRealm(auth.realm), stun.NewNonce(auth.nonce),
			stun.NewLongTermIntegrity(auth.user, auth.realm, auth.password)} {
			if err := s.AddTo(m); err != nil {
				return nil, fmt.Errorf("TURN request for flow %d: %w", i, err)
			}
		}
	}
	return m.Raw, nil
}

// xorAddress decodes the IPv4 XOR-*-ADDRESS attribute typ.
func xorAddress(attrs []byte, typ uint16) (netip.AddrPort, error) {
	for len(attrs) >= 4 {
		t, l := binary.BigEndian.Uint16(attrs), int(binary.BigEndian.Uint16(attrs[2:]))
		if 4+l > len(attrs) {
			break
		}
		v := attrs[4 : 4+l]
		if t == typ && l == 8 && v[1] == 1 {
			port := binary.BigEndian.Uint16(v[2:]) ^ (stunMagic >> 16)
			var ip [4]byte
			binary.BigEndian.PutUint32(ip[:], binary.BigEndian.Uint32(v[4:])^stunMagic)
			return netip.AddrPortFrom(netip.AddrFrom4(ip), port), nil
		}
		attrs = attrs[(4+l+3)&^3:]
	}
	return netip.AddrPort{}, errors.New("no IPv4 relayed address in the answer")
}

func stunErrorText(attrs []byte) string {
	for len(attrs) >= 4 {
		t, l := binary.BigEndian.Uint16(attrs), int(binary.BigEndian.Uint16(attrs[2:]))
		if 4+l > len(attrs) {
			break
		}
		if t == attrErrorCode && l >= 4 {
			v := attrs[4 : 4+l]
			return fmt.Sprintf("%d %s", int(v[2]&7)*100+int(v[3]), v[4:])
		}
		attrs = attrs[(4+l+3)&^3:]
	}
	return "no error code"
}

// sendFrom sends one datagram from source address src (IP_PKTINFO).
func sendFrom(fd int, src [4]byte, dst *unix.RawSockaddrInet4, b []byte) error {
	oob := make([]byte, unix.CmsgSpace(unix.SizeofInet4Pktinfo))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_PKTINFO
	h.SetLen(unix.CmsgLen(unix.SizeofInet4Pktinfo))
	(*unix.Inet4Pktinfo)(unsafe.Pointer(&oob[unix.CmsgLen(0)])).Spec_dst = src
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&dst.Port))[:])
	_, err := unix.SendmsgN(fd, b, oob, &unix.SockaddrInet4{Addr: dst.Addr, Port: int(port)}, 0)
	return err
}

// writeRelayed writes one relayed ip:port per line.
func writeRelayed(path string, relayed []netip.AddrPort) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, ap := range relayed {
		fmt.Fprintln(w, ap)
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
