package main

import (
	"encoding/binary"
	"testing"

	"github.com/pion/stun/v4"
	"golang.org/x/sys/unix"
)

// TestAuthenticatedRequest: with credentials, a ChannelBind carries
// USERNAME, REALM and NONCE and a MESSAGE-INTEGRITY a server holding the
// same password accepts and one holding another refuses; its transaction
// id names the flow; without credentials none of it is there.
func TestAuthenticatedRequest(t *testing.T) {
	auth := &turnAuth{user: "1796667488:bench", password: "secret-derived", realm: "jnrelay", nonce: "n0nce"}
	peers := []unix.RawSockaddrInet4{rawSockaddr([4]byte{198, 51, 100, 129}, 40000), rawSockaddr([4]byte{198, 51, 100, 130}, 40000)}
	raw, err := stunRequest(stunChannelBind, 1, [4]byte{1, 2, 3, 4}, peers, auth)
	if err != nil {
		t.Fatal(err)
	}
	m := &stun.Message{Raw: raw}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	if m.Type != stun.NewType(stun.MethodChannelBind, stun.ClassRequest) || binary.BigEndian.Uint32(m.TransactionID[4:]) != 1 {
		t.Fatalf("type %v, transaction id %x", m.Type, m.TransactionID)
	}
	var user stun.Username
	var realm stun.Realm
	var nonce stun.Nonce
	if user.GetFrom(m) != nil || realm.GetFrom(m) != nil || nonce.GetFrom(m) != nil ||
		user.String() != auth.user || realm.String() != auth.realm || nonce.String() != auth.nonce {
		t.Fatalf("username %q realm %q nonce %q", user, realm, nonce)
	}
	var peer stun.XORMappedAddress
	if err := peer.GetFromAs(m, stun.AttrXORPeerAddress); err != nil || peer.String() != "198.51.100.130:40000" {
		t.Fatalf("peer %v (%v), want flow 1's", peer, err)
	}
	if err := stun.NewLongTermIntegrity(auth.user, auth.realm, auth.password).Check(m); err != nil {
		t.Fatalf("integrity with the right password: %v", err)
	}
	if err := stun.NewLongTermIntegrity(auth.user, auth.realm, "other").Check(m); err == nil {
		t.Fatal("integrity accepted with another password")
	}

	plain, err := stunRequest(stunAllocate, 0, [4]byte{1, 2, 3, 4}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	m = &stun.Message{Raw: plain}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	if m.Contains(stun.AttrMessageIntegrity) || m.Contains(stun.AttrUsername) || !m.Contains(stun.AttrRequestedTransport) {
		t.Fatalf("unauthenticated Allocate has attributes %v", m.Attributes)
	}
}
