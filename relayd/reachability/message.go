package reachability

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/jnrelay/jnrelay/relayd/publicaddr"
	"github.com/pion/stun/v4"
)

// CHANGE-REQUEST flags (RFC 5780 section 7.2, RFC 3489 section 11.2.4).
const (
	changeIP   = 0x4
	changePort = 0x2
)

// newRequest builds a Binding request with a fresh transaction ID; with
// change it carries a CHANGE-REQUEST asking the server to answer from its
// other address and port. pion/stun has no setter for that attribute: it
// is four bytes of flags.
func newRequest(change bool) (*stun.Message, error) {
	setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
	if change {
		setters = append(setters, stun.RawAttribute{Type: stun.AttrChangeRequest,
			Value: binary.BigEndian.AppendUint32(nil, changeIP|changePort)})
	}
	// No FINGERPRINT: RFC 3489 servers (Debian's stund) predate it; they
	// skip unknown optional attributes, but nothing is gained by it here.
	return stun.Build(setters...)
}

// answer is what a Binding response says.
type answer struct {
	// mapped is the address and port the server saw the request from
	// (XOR-MAPPED-ADDRESS, or MAPPED-ADDRESS from an RFC 3489 server).
	mapped netip.AddrPort
	// other is the server's second address: OTHER-ADDRESS (RFC 5780) or
	// CHANGED-ADDRESS (RFC 3489); invalid when it has none.
	other netip.AddrPort
}

// errRefused: the server answered with an error response.
var errRefused = errors.New("error response")

// parseAnswer reads a datagram as the response to the transaction id. ok
// is false for datagrams that are not (a stray packet, another
// transaction): the caller keeps waiting.
func parseAnswer(pkt []byte, id [stun.TransactionIDSize]byte) (a answer, ok bool, err error) {
	m := stun.Message{Raw: append([]byte(nil), pkt...)}
	if m.Decode() != nil || m.TransactionID != id || m.Type.Method != stun.MethodBinding {
		return answer{}, false, nil
	}
	switch m.Type.Class {
	case stun.ClassSuccessResponse:
	case stun.ClassErrorResponse:
		var code stun.ErrorCodeAttribute
		if code.GetFrom(&m) == nil {
			return answer{}, true, fmt.Errorf("%w %d %s", errRefused, code.Code, code.Reason)
		}
		return answer{}, true, errRefused
	default:
		return answer{}, false, nil
	}
	if a.mapped, err = publicaddr.MappedFrom(&m); err != nil {
		return answer{}, true, err
	}
	for _, t := range []stun.AttrType{stun.AttrOtherAddress, stun.AttrChangedAddress} {
		var o stun.MappedAddress
		if o.GetFromAs(&m, t) == nil {
			if ip, ok := netip.AddrFromSlice(o.IP); ok {
				a.other = netip.AddrPortFrom(ip.Unmap(), uint16(o.Port))
				break
			}
		}
	}
	return a, true, nil
}
