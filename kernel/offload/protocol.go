package offload

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"github.com/jnrelay/jnrelay/kernel/nft"
)

// Version is the protocol's version; a peer speaking another is refused.
const Version = 1

// MaxFrame bounds one frame's JSON, in bytes.
const MaxFrame = 1 << 20

// maxLegsPerRequest bounds the legs one Apply names (relayd's fast path
// sends at most 128 a transaction; a leg is about 150 bytes of JSON).
const maxLegsPerRequest = 2048

// maxCountersPerFrame bounds one Counters frame (about 70 bytes each);
// a larger table's counters come in several frames.
const maxCountersPerFrame = 8192

// The operations.
const (
	OpOpen     = "open"
	OpApply    = "apply"
	OpCounters = "counters"
	OpClose    = "close"
)

// The modes Open takes: kernel/tcfwd, kernel/nft, or the first of them
// the host runs.
const (
	ModeEBPF     = "ebpf"
	ModeNftables = "nftables"
	// ModeFlowtable is kernel/nft's flowtable variant.
	ModeFlowtable = "flowtable"
	ModeAuto      = "auto"
)

// Request is what the client sends.
type Request struct {
	V  int    `json:"v"`
	Op string `json:"op"`
	// Open.
	Mode     string     `json:"mode,omitempty"`
	Listen   netip.Addr `json:"listen,omitzero"`
	MaxFlows int        `json:"max_flows,omitempty"`
	// Apply.
	Remove []nft.Leg `json:"remove,omitempty"`
	Add    []nft.Leg `json:"add,omitempty"`
}

// Response is the broker's answer: one frame, or for Counters as many as
// the counters need, all but the last with More set.
type Response struct {
	V        int           `json:"v"`
	Name     string        `json:"name,omitempty"` // Open: what forwards
	Err      *WireError    `json:"error,omitempty"`
	Counters []FlowCounter `json:"counters,omitempty"`
	More     bool          `json:"more,omitempty"`
}

// FlowCounter is one flow's counter on the wire.
type FlowCounter struct {
	Peer    netip.AddrPort `json:"peer"`
	Port    uint16         `json:"port"`
	Packets uint64         `json:"packets"`
	Bytes   uint64         `json:"bytes"`
}

// Error kinds on the wire, so the client gives back errors callers
// recognise with errors.Is and errors.As.
const (
	kindConflict    = "conflict"    // nft.ErrConflict
	kindUnavailable = "unavailable" // *nft.UnavailableError
	kindRefused     = "refused"     // ErrRefused: the broker's validation
	kindOther       = "other"
)

// WireError is an error on the wire.
type WireError struct {
	Kind   string `json:"kind"`
	Reason string `json:"reason,omitempty"` // unavailable: nft.UnavailableError.Reason
	Msg    string `json:"msg"`
}

// ErrRefused is the broker refusing a request: a leg on a port the
// client does not hold, more flows than it may have, a malformed or
// out-of-order request.
var ErrRefused = errors.New("offload broker refused")

// ErrBrokerGone is a broken connection to the broker: its table is gone
// with it (the broker removes a table whose client leaves, and a table
// whose broker dies goes with the broker's descriptors or at its next
// start).
var ErrBrokerGone = errors.New("offload broker connection lost")

// wireError encodes err for the client.
func wireError(err error) *WireError {
	if err == nil {
		return nil
	}
	var un *nft.UnavailableError
	switch {
	case errors.Is(err, nft.ErrConflict):
		return &WireError{Kind: kindConflict, Msg: err.Error()}
	case errors.As(err, &un):
		return &WireError{Kind: kindUnavailable, Reason: un.Reason, Msg: un.Err.Error()}
	case errors.Is(err, ErrRefused):
		return &WireError{Kind: kindRefused, Msg: err.Error()}
	}
	return &WireError{Kind: kindOther, Msg: err.Error()}
}

// err decodes e into an error of its kind.
func (e *WireError) err() error {
	if e == nil {
		return nil
	}
	switch e.Kind {
	case kindConflict:
		return fmt.Errorf("offload broker: %s: %w", e.Msg, nft.ErrConflict)
	case kindUnavailable:
		return &nft.UnavailableError{Reason: e.Reason, Err: fmt.Errorf("offload broker: %s", e.Msg)}
	case kindRefused:
		return fmt.Errorf("%s: %w", e.Msg, ErrRefused)
	}
	return fmt.Errorf("offload broker: %s", e.Msg)
}

// writeFrame sends v as one frame.
func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode frame: %w", err)
	}
	if len(b) > MaxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(b), MaxFrame)
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// readFrame reads one frame's body; io.EOF when the peer closed between
// frames.
func readFrame(r io.Reader) ([]byte, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > MaxFrame {
		return nil, fmt.Errorf("frame length %d: want 1..%d: %w", n, MaxFrame, ErrRefused)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("read frame: %w", io.ErrUnexpectedEOF)
	}
	return b, nil
}

// decodeStrict decodes one JSON value with no unknown fields and nothing
// after it.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the message")
	}
	return nil
}

// DecodeRequest parses and checks the form of one request frame: the
// version, a known operation, the fields that operation takes and their
// bounds. Whether the legs may be installed is the broker's validation
// (validate.go), which needs the kernel.
func DecodeRequest(b []byte) (Request, error) {
	var r Request
	if err := decodeStrict(b, &r); err != nil {
		return Request{}, fmt.Errorf("malformed request: %v: %w", err, ErrRefused)
	}
	if r.V != Version {
		return Request{}, fmt.Errorf("protocol version %d, want %d: %w", r.V, Version, ErrRefused)
	}
	// An empty list is no list: one spelling for what the broker uses.
	if len(r.Remove) == 0 {
		r.Remove = nil
	}
	if len(r.Add) == 0 {
		r.Add = nil
	}
	openFields := r.Mode != "" || r.Listen.IsValid() || r.MaxFlows != 0
	applyFields := r.Remove != nil || r.Add != nil
	switch r.Op {
	case OpOpen:
		if applyFields {
			return Request{}, fmt.Errorf("open takes no legs: %w", ErrRefused)
		}
		switch r.Mode {
		case ModeEBPF, ModeNftables, ModeFlowtable, ModeAuto:
		default:
			return Request{}, fmt.Errorf("mode %q: want ebpf, flowtable, nftables or auto: %w", r.Mode, ErrRefused)
		}
		if !r.Listen.IsValid() || !r.Listen.Is4() || r.Listen.IsMulticast() {
			return Request{}, fmt.Errorf("listen address %s: want an IPv4 unicast or unspecified address: %w", r.Listen, ErrRefused)
		}
		if r.MaxFlows < 1 {
			return Request{}, fmt.Errorf("max_flows %d: want at least 1: %w", r.MaxFlows, ErrRefused)
		}
	case OpApply:
		if openFields {
			return Request{}, fmt.Errorf("apply takes legs only: %w", ErrRefused)
		}
		if len(r.Remove)+len(r.Add) > maxLegsPerRequest {
			return Request{}, fmt.Errorf("%d legs in one request, at most %d: %w", len(r.Remove)+len(r.Add), maxLegsPerRequest, ErrRefused)
		}
		for _, l := range append(r.Remove[:len(r.Remove):len(r.Remove)], r.Add...) {
			if err := l.Valid(); err != nil {
				return Request{}, fmt.Errorf("%v: %w", err, ErrRefused)
			}
		}
	case OpCounters, OpClose:
		if openFields || applyFields {
			return Request{}, fmt.Errorf("%s takes no fields: %w", r.Op, ErrRefused)
		}
	default:
		return Request{}, fmt.Errorf("operation %q: %w", r.Op, ErrRefused)
	}
	return r, nil
}
