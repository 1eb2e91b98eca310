package tcfwd

// The flow map: installing and removing legs, reading their counters.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"golang.org/x/sys/unix"

	"github.com/jnrelay/jnrelay/kernel/internal/ebpf"
	"github.com/jnrelay/jnrelay/kernel/nft"
)

// flowKey is a flow's map key: the datagram's source address and its
// UDP ports word (source = the peer's port, destination = the relay's).
func flowKey(fl nft.Flow) []byte {
	b := make([]byte, keySize)
	a := fl.Peer.Addr().Unmap().As4()
	copy(b, a[:])
	binary.BigEndian.PutUint16(b[4:], fl.Peer.Port())
	binary.BigEndian.PutUint16(b[6:], fl.Port)
	return b
}

// flowValue is a fresh entry: datagrams go from local:port to peer.
func flowValue(local netip.Addr, port uint16, peer netip.AddrPort) []byte {
	b := make([]byte, valueSize)
	l, p := local.Unmap().As4(), peer.Addr().Unmap().As4()
	copy(b[valSrc:], l[:])
	copy(b[valDst:], p[:])
	binary.BigEndian.PutUint16(b[valPorts:], port)
	binary.BigEndian.PutUint16(b[valPorts+2:], peer.Port())
	return b
}

// entries are a leg's two flows.
func entries(l nft.Leg) [2]struct {
	flow  nft.Flow
	value []byte
} {
	return [2]struct {
		flow  nft.Flow
		value []byte
	}{
		{l.A, flowValue(l.LocalB, l.B.Port, l.B.Peer)},
		{l.B, flowValue(l.LocalA, l.A.Port, l.A.Peer)},
	}
}

// Apply removes the legs in remove and installs those in add. A leg of
// add whose flow another installed leg uses fails the call with
// nft.ErrConflict before anything changes; a failure midway puts back
// what the call had changed. Unlike nftables' transactions, the map
// changes flow by flow: a datagram between two updates takes the old
// leg or userspace, both of which relay it.
func (f *Forwarder) Apply(remove, add []nft.Leg) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("ebpf fast path is closed")
	}
	del := map[nft.Flow]bool{}
	for _, l := range remove {
		if !f.keys[l.A] || !f.keys[l.B] {
			return fmt.Errorf("leg %s->%d / %s->%d is not installed", l.A.Peer, l.A.Port, l.B.Peer, l.B.Port)
		}
		del[l.A], del[l.B] = true, true
	}
	added := map[nft.Flow]bool{}
	for _, l := range add {
		if err := l.Valid(); err != nil {
			return err
		}
		for _, fl := range []nft.Flow{l.A, l.B} {
			if (f.keys[fl] && !del[fl]) || added[fl] {
				return fmt.Errorf("leg %s->%d / %s->%d: %w", l.A.Peer, l.A.Port, l.B.Peer, l.B.Port, nft.ErrConflict)
			}
			added[fl] = true
		}
	}
	var undo []func()
	rollback := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	for _, l := range remove {
		for _, e := range entries(l) {
			k := flowKey(e.flow)
			old := make([]byte, valueSize)
			if err := ebpf.MapLookup(f.flows, k, old); err != nil {
				return rollback(fmt.Errorf("read flow %s->%d: %w", e.flow.Peer, e.flow.Port, err))
			}
			if err := ebpf.MapDelete(f.flows, k); err != nil {
				return rollback(fmt.Errorf("delete flow %s->%d: %w", e.flow.Peer, e.flow.Port, err))
			}
			undo = append(undo, func() { _ = ebpf.MapUpdate(f.flows, k, old, unix.BPF_NOEXIST) })
		}
	}
	for _, l := range add {
		for _, e := range entries(l) {
			k := flowKey(e.flow)
			if err := ebpf.MapUpdate(f.flows, k, e.value, unix.BPF_NOEXIST); err != nil {
				return rollback(fmt.Errorf("install flow %s->%d: %w", e.flow.Peer, e.flow.Port, err))
			}
			undo = append(undo, func() { _ = ebpf.MapDelete(f.flows, k) })
		}
	}
	for fl := range del {
		delete(f.keys, fl)
	}
	for fl := range added {
		f.keys[fl] = true
	}
	return nil
}

// batchSize is how many entries one BPF_MAP_LOOKUP_BATCH reads.
const batchSize = 1024

// Counters returns what the program forwarded for every installed flow,
// reading the map in batches of batchSize entries (BPF_MAP_LOOKUP_BATCH,
// Linux 5.6, older than any kernel the program loads on: it calls
// bpf_redirect_neigh, 5.10). It also runs Sync.
func (f *Forwarder) Counters() (map[nft.Flow]nft.Counter, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, errors.New("ebpf fast path is closed")
	}
	if err := f.syncLocked(); err != nil {
		return nil, err
	}
	out := make(map[nft.Flow]nft.Counter, len(f.keys))
	put := func(k, v []byte) {
		fl := nft.Flow{Peer: netip.AddrPortFrom(netip.AddrFrom4([4]byte(k[0:4])), binary.BigEndian.Uint16(k[4:])),
			Port: binary.BigEndian.Uint16(k[6:])}
		out[fl] = nft.Counter{Packets: binary.NativeEndian.Uint64(v[valPackets:]), Bytes: binary.NativeEndian.Uint64(v[valBytes:])}
	}
	if len(f.keys) == 0 {
		return out, nil
	}
	if f.bKeys == nil {
		f.bKeys, f.bVals = make([]byte, batchSize*keySize), make([]byte, batchSize*valueSize)
	}
	var token, next [4]byte
	var in []byte // nil: from the start
	for {
		n, last, err := ebpf.MapLookupBatch(f.flows, in, next[:], f.bKeys, f.bVals, batchSize)
		if err != nil {
			return nil, fmt.Errorf("read flow counters: %w", err)
		}
		for i := range n {
			put(f.bKeys[i*keySize:(i+1)*keySize], f.bVals[i*valueSize:(i+1)*valueSize])
		}
		if last {
			return out, nil
		}
		token = next
		in = token[:]
	}
}
