package testport

import (
	"net"
	"testing"
)

// TestUDPAndTCP: the port picked can be bound for UDP and for TCP on
// every address, one after the other.
func TestUDPAndTCP(t *testing.T) {
	port := UDPAndTCP(t)
	u, err := net.ListenUDP("udp", &net.UDPAddr{Port: port})
	if err != nil {
		t.Fatalf("UDP port %d not free: %v", port, err)
	}
	defer u.Close()
	l, err := net.ListenTCP("tcp", &net.TCPAddr{Port: port})
	if err != nil {
		t.Fatalf("TCP port %d not free: %v", port, err)
	}
	l.Close()
}

func TestTCP(t *testing.T) {
	port := TCP(t)
	l, err := net.ListenTCP("tcp", &net.TCPAddr{Port: port})
	if err != nil {
		t.Fatalf("TCP port %d not free: %v", port, err)
	}
	l.Close()
}
