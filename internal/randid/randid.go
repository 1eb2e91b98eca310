// Package randid makes the random identifiers relayd hands out: channel
// ids, the ids of stanzas it originates, TURN REST usernames. One place
// decides their entropy and spelling.
package randid

import (
	"crypto/rand"
	"encoding/hex"
)

// Hex returns n random bytes as 2n lowercase hex digits: unguessable for
// n ≥ 16, and a valid XML Nmtoken and URL path segment.
//
// crypto/rand.Read does not fail since Go 1.24 (it crashes the program
// instead when the system has no randomness to give), so neither does Hex.
func Hex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
