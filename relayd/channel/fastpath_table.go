package channel

import (
	"errors"
	"time"

	"github.com/jnrelay/jnrelay/kernel/nft"
	"github.com/jnrelay/jnrelay/kernel/offload"
)

// The fast path's table work, on its own goroutine or under fp.mu:
// installing and removing legs, reading counters and crediting them to
// the channels.

// change is one leg's move into, within or out of the kernel.
type change struct {
	ref     legRef
	old     *offloaded
	spec    nft.Leg
	install bool
}

// maxLegsPerTransaction bounds one nftables transaction (4 map elements
// per leg, ≈ 100 bytes each).
const maxLegsPerTransaction = 128

// applyChunk applies changes in one transaction, or leg by leg when that
// fails.
func (fp *fastPath) applyChunk(changes []change, apply func([]change) error, commit func(change)) {
	err := apply(changes)
	if err == nil {
		for _, ch := range changes {
			commit(ch)
		}
		return
	}
	if errors.Is(err, offload.ErrBrokerGone) {
		fp.abandonLocked(err)
		for _, ch := range changes {
			fp.orphans[ch.ref] = true
		}
		return
	}
	if len(changes) > 1 {
		fp.log.Warn("fast path transaction failed, retrying leg by leg", "legs", len(changes), "err", err.Error())
	}
	for _, ch := range changes {
		if len(changes) > 1 {
			err = apply([]change{ch})
		}
		if err == nil {
			commit(ch)
			continue
		}
		reason := NotOffloadedKernel
		if errors.Is(err, nft.ErrConflict) {
			reason = NotOffloadedConflict
		}
		fp.count(reason)
		fp.log.Warn("leg stays in userspace", "channel", ch.ref.c.info.ID, "leg", ch.ref.leg, "reason", reason, "err", err.Error())
		// A failed update leaves the old rules in force if they were;
		// remove them so userspace, which has the new latch, takes over.
		if ch.old != nil && fp.table.Apply([]nft.Leg{ch.old.spec}, nil) == nil {
			commit(change{ref: ch.ref})
		}
	}
}

// process installs, updates or removes the queued legs in one
// transaction; when that fails, leg by leg, so one bad leg costs only
// itself.
func (fp *fastPath) process() {
	fp.qmu.Lock()
	queue := fp.queue
	fp.queue = nil
	fp.qmu.Unlock()

	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		if fp.gone.Load() {
			// For the broker's next table (tryReopen).
			for _, ref := range queue {
				fp.orphans[ref] = true
			}
		}
		return
	}
	var changes []change
	seen := map[legRef]bool{}
	for _, ref := range queue {
		if seen[ref] || !ref.c.isLive() {
			continue
		}
		seen[ref] = true
		spec, reason, ok := fp.desired(ref.c, ref.leg)
		old := fp.legs[ref]
		if old != nil && ok && old.spec == spec {
			continue
		}
		if reason != "" {
			fp.count(reason)
		}
		if old == nil && !ok {
			continue
		}
		changes = append(changes, change{ref: ref, old: old, spec: spec, install: ok})
	}
	if len(changes) == 0 {
		return
	}
	// Legs leaving the kernel take their last counters with them: read
	// them first.
	for _, ch := range changes {
		if ch.old != nil {
			fp.pollLocked()
			break
		}
	}
	apply := func(chs []change) error {
		var remove, add []nft.Leg
		for _, ch := range chs {
			if ch.old != nil {
				remove = append(remove, ch.old.spec)
			}
			if ch.install {
				add = append(add, ch.spec)
			}
		}
		return fp.table.Apply(remove, add)
	}
	commit := func(ch change) {
		if ch.install {
			fp.legs[ch.ref] = &offloaded{spec: ch.spec, at: int64(time.Since(ch.ref.c.created))}
			ch.ref.c.setInKernel(ch.ref.leg, true)
			fp.counts.offloads.Add(1)
			fp.log.Debug("leg offloaded", "channel", ch.ref.c.info.ID, "leg", ch.ref.leg,
				"peer_a", ch.spec.A.Peer.String(), "peer_b", ch.spec.B.Peer.String())
		} else {
			delete(fp.legs, ch.ref)
			ch.ref.c.setInKernel(ch.ref.leg, false)
		}
	}
	// Transactions of at most maxLegsPerTransaction: one netlink batch
	// must fit the socket's buffers (1,000 legs at once fail with
	// EMSGSIZE), and a failure costs a retry of one chunk only.
	for len(changes) > 0 {
		chunk := changes[:min(len(changes), maxLegsPerTransaction)]
		changes = changes[len(chunk):]
		if fp.closed {
			// The table went with the broker (abandonLocked): these
			// wait for its next one.
			for _, ch := range chunk {
				fp.orphans[ch.ref] = true
			}
			continue
		}
		fp.applyChunk(chunk, apply, commit)
	}
	fp.counts.gauge.Store(int64(len(fp.legs)))
}

// abandonLocked gives up a table that went away with the offload
// broker's connection (the broker removes the table of a client that
// leaves, and one it held goes when it ends): every leg is relayed in
// userspace again, where its latches never stopped being valid, until
// tryReopen gets a new table from the broker.
func (fp *fastPath) abandonLocked(err error) {
	if fp.gone.Load() {
		return
	}
	fp.log.Error("in-kernel fast path lost with the offload broker: every leg is relayed in userspace", "was", fp.table.Name(), "err", err.Error())
	fp.closed = true
	fp.gone.Store(true)
	fp.orphans = map[legRef]bool{}
	for ref := range fp.legs {
		ref.c.setInKernel(ref.leg, false)
		fp.orphans[ref] = true
	}
	fp.legs = map[legRef]*offloaded{}
	fp.counts.gauge.Store(0)
}

// reopenInterval is how often a fast path whose table went with the
// broker asks the broker for a new one (a crashed broker is restarted by
// its supervisor within seconds).
const reopenInterval = 5 * time.Second

// tryReopen asks the broker for a new table when the old one went with
// it, at most every reopenInterval, and offers it the legs the old one
// had: the broker's new table also replaces a stale one (nftables) that
// a crashed broker left forwarding.
func (fp *fastPath) tryReopen() {
	if !fp.gone.Load() || fp.reopen == nil || time.Since(fp.reopenedAt) < reopenInterval {
		return
	}
	fp.reopenedAt = time.Now()
	t, err := fp.reopen() // not under mu: it may wait for the broker
	if err != nil {
		fp.log.Debug("offload broker still unavailable", "err", err.Error())
		return
	}
	fp.mu.Lock()
	fp.table, fp.closed = t, false
	fp.gone.Store(false)
	orphans := fp.orphans
	fp.orphans = nil
	fp.mu.Unlock()
	fp.log.Info("in-kernel fast path back through the offload broker", "by", t.Name(), "legs_offered", len(orphans))
	for ref := range orphans {
		if ref.c.isLive() {
			fp.enqueue(ref.c, ref.leg)
		}
	}
}

func (fp *fastPath) count(reason string) {
	for i, r := range notOffloadedReasons {
		if r == reason {
			fp.counts.notOffloaded[i].Add(1)
		}
	}
}

// refresh reads the counters unless they were read within maxAge.
func (fp *fastPath) refresh(maxAge time.Duration) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed || (maxAge > 0 && fp.fresh(maxAge)) {
		return
	}
	fp.pollLocked()
}

// pollLocked reads every offloaded flow's counter and credits what is new
// to its channel: packets and bytes forwarded, the peer's last-seen time
// and the channel's last forward.
func (fp *fastPath) pollLocked() {
	if len(fp.legs) == 0 {
		fp.polledAt.Store(int64(time.Since(fp.epoch)))
		return
	}
	started := time.Since(fp.epoch)
	cs, err := fp.table.Counters()
	if errors.Is(err, offload.ErrBrokerGone) {
		fp.abandonLocked(err)
		return
	}
	if err != nil {
		fp.log.Warn("fast path counters unreadable", "err", err.Error())
		return
	}
	for ref, o := range fp.legs {
		c := ref.c
		now := int64(time.Since(c.created))
		elapsed := now - o.at
		o.at = now
		for s, flow := range [2]nft.Flow{o.spec.A, o.spec.B} {
			cur, ok := cs[flow]
			if !ok || cur.Packets <= o.seen[s].Packets {
				continue
			}
			packets, bytes := cur.Packets-o.seen[s].Packets, cur.Bytes-o.seen[s].Bytes
			if c.overCeilingInKernel(ref.leg, packets, elapsed) {
				// Faster than the ceiling allows: back to userspace,
				// where the ceiling holds datagram by datagram.
				fp.log.Warn("fast path: leg over the packet ceiling, relayed in userspace from now on", "channel", c.info.ID,
					"leg", ref.leg, "packets", packets, "seconds", float64(elapsed)/1e9)
				fp.enqueue(c, ref.leg)
			}
			c.creditKernel(ref.leg, s, packets, bytes, now)
			o.seen[s] = cur
		}
	}
	fp.polledAt.Store(int64(started))
}

// retire takes c's legs out of the kernel before its sockets close. With
// final, the counters are read first so the channel's totals include the
// kernel's last datagrams; an expired channel skips that (it was idle by
// fresh counters).
func (fp *fastPath) retire(c *Channel, final bool) {
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return
	}
	var remove []nft.Leg
	var refs []legRef
	for l := range c.legs {
		if o := fp.legs[legRef{c, l}]; o != nil {
			remove = append(remove, o.spec)
			refs = append(refs, legRef{c, l})
		}
	}
	if len(remove) == 0 {
		return
	}
	// A channel's last counts: one dump of the whole table, shared by
	// every channel that ends within finalPollShare (a thousand expiring
	// together must not cost a thousand dumps).
	if final && !fp.fresh(finalPollShare) {
		fp.pollLocked()
		if fp.closed {
			return // the table went with the broker, and the legs with it
		}
	}
	if err := fp.table.Apply(remove, nil); err != nil {
		// The sockets close anyway; rules left behind forward to peers of
		// a dead channel until the table goes. Say so.
		fp.log.Error("fast path: could not remove a channel's legs", "channel", c.info.ID, "err", err.Error())
	}
	for _, ref := range refs {
		delete(fp.legs, ref)
		c.setInKernel(ref.leg, false)
	}
	fp.counts.gauge.Store(int64(len(fp.legs)))
}

// close reads the counters one last time, deletes the table (every leg
// returns to userspace, whose latches never stopped being valid) and
// stops the goroutine. It is idempotent.
func (fp *fastPath) close() {
	fp.cancel()
	<-fp.done
	fp.mu.Lock()
	defer fp.mu.Unlock()
	if fp.closed {
		return
	}
	fp.pollLocked()
	fp.closed = true
	if err := fp.table.Close(); err != nil {
		fp.log.Error("fast path: could not remove it from the kernel", "by", fp.table.Name(), "err", err.Error())
	}
	for ref := range fp.legs {
		ref.c.setInKernel(ref.leg, false)
	}
	fp.legs = map[legRef]*offloaded{}
	fp.counts.gauge.Store(0)
	fp.log.Info("in-kernel fast path off: every leg is relayed in userspace", "was", fp.table.Name())
}

func (n *fastPathCounts) stats(active bool) FastPathStats {
	s := FastPathStats{Active: active, OffloadedNow: int(n.gauge.Load()), Offloads: n.offloads.Load(),
		NotOffloaded: make(map[string]uint64, len(notOffloadedReasons))}
	for i, r := range notOffloadedReasons {
		s.NotOffloaded[r] = n.notOffloaded[i].Load()
	}
	return s
}

// finalPollShare is how old a counter read may be to count as a channel's
// final one (what the kernel forwards in that window after the read is
// not credited to the ended channel).
const finalPollShare = 20 * time.Millisecond
