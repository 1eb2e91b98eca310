// Package testport picks ports for the servers a test starts: ports
// nobody holds at the moment, on every address. Only tests (and the
// demo, a test run by hand) import it.
//
// A port picked is free when asked, not when the server binds it: these
// are for servers the test starts at once, where losing that race is
// rare and fails loudly (the server cannot listen).
package testport

import (
	"fmt"
	"net"
	"testing"
)

// tries bounds the search: on a busy host most ports the kernel gives
// for UDP are free for TCP as well, so a few tries find one.
const tries = 100

// UDPAndTCP is a port nobody holds now for UDP nor TCP, on any address
// of either family: the built-in TURN server binds both at its port
// (at the unspecified address in the dual-stack tests), and on a busy
// host a free UDP port is often some connection's TCP port.
func UDPAndTCP(t testing.TB) int {
	t.Helper()
	port, err := FindUDPAndTCP()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// FindUDPAndTCP is UDPAndTCP for a program without a testing.TB.
func FindUDPAndTCP() (int, error) {
	for range tries {
		u, err := net.ListenUDP("udp", &net.UDPAddr{})
		if err != nil {
			return 0, fmt.Errorf("pick a UDP port: %w", err)
		}
		port := u.LocalAddr().(*net.UDPAddr).Port
		l, err := net.ListenTCP("tcp", &net.TCPAddr{Port: port})
		u.Close()
		if err == nil {
			l.Close()
			return port, nil
		}
	}
	return 0, fmt.Errorf("no port free for both UDP and TCP in %d tries", tries)
}

// TCP is a TCP port nobody holds now, on any address of either family.
func TCP(t testing.TB) int {
	t.Helper()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{})
	if err != nil {
		t.Fatalf("pick a TCP port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
