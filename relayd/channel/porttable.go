package channel

import (
	"sync"
	"sync/atomic"
)

// portTable maps relay port numbers to the side holding them, for the
// workers to find a ready socket's channel. Lookups (one per event) are
// lock-free; changes take a mutex. It only ever grows to cover new port
// ranges, so channels from an old range keep working after a
// reconfiguration.
type portTable struct {
	mu  sync.Mutex
	cur atomic.Pointer[portSlots]
}

type portSlots struct {
	first int
	slots []atomic.Pointer[side]
}

func newPortTable(first, last int) *portTable {
	t := &portTable{}
	t.cur.Store(&portSlots{first: first, slots: make([]atomic.Pointer[side], last-first+1)})
	return t
}

// lookup returns the side holding port, or nil.
func (t *portTable) lookup(port int) *side {
	s := t.cur.Load()
	i := port - s.first
	if i < 0 || i >= len(s.slots) {
		return nil
	}
	return s.slots[i].Load()
}

// set records that sd holds its port.
func (t *portTable) set(sd *side) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.cur.Load()
	s.slots[sd.port-s.first].Store(sd)
}

// clear forgets sd, if it still holds its port.
func (t *portTable) clear(sd *side) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.cur.Load()
	if i := sd.port - s.first; i >= 0 && i < len(s.slots) {
		s.slots[i].CompareAndSwap(sd, nil)
	}
}

// cover grows the table to include first..last, keeping every entry.
func (t *portTable) cover(first, last int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.cur.Load()
	oldLast := old.first + len(old.slots) - 1
	if first >= old.first && last <= oldLast {
		return
	}
	nf, nl := min(first, old.first), max(last, oldLast)
	grown := &portSlots{first: nf, slots: make([]atomic.Pointer[side], nl-nf+1)}
	for i := range old.slots {
		grown.slots[old.first+i-nf].Store(old.slots[i].Load())
	}
	t.cur.Store(grown)
}
