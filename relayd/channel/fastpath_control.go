package channel

// Switching the fast path while channels are live.

// setFastPath switches the fast path to mode, sized for maxFlows flows.
// Turning it off deletes the table: every offloaded leg goes back to
// userspace, where its latches were kept. Turning it on offers every
// latched leg to the kernel. A new mode, or a larger port range, opens
// it anew.
func (m *Manager) setFastPath(mode FastPathMode, maxFlows int) error {
	if mode == "" {
		mode = FastPathOff
	}
	m.fpMu.Lock()
	defer m.fpMu.Unlock()
	m.mu.Lock()
	cur := m.cfg.FastPath
	m.mu.Unlock()
	if cur == "" {
		cur = FastPathOff
	}
	old := m.sh.fp.Load()
	if mode == cur && (old == nil || old.capacity == 0 || old.capacity >= maxFlows) {
		return nil
	}
	// Close before opening: two nftables fast paths would share one
	// table. The offloaded legs return to userspace meanwhile.
	if old != nil {
		m.sh.fp.Store(nil)
		old.close()
	}
	fp, err := openFastPath(m.sh, &m.fpCounts, mode, maxFlows, m.tr.socketPerPort())
	if err != nil {
		if old != nil {
			// Keep what ran before, if it still can.
			if fp, rerr := openFastPath(m.sh, &m.fpCounts, cur, old.capacity, m.tr.socketPerPort()); rerr == nil && fp != nil {
				m.sh.fp.Store(fp)
				m.offerLive(fp)
			}
		}
		return err
	}
	if fp != nil {
		m.sh.fp.Store(fp)
		m.offerLive(fp)
	}
	m.mu.Lock()
	m.cfg.FastPath = mode
	m.mu.Unlock()
	return nil
}

// offerLive queues every live channel's legs for fp.
func (m *Manager) offerLive(fp *fastPath) {
	for _, c := range m.live() {
		for l := range c.legs {
			fp.enqueue(c, l)
		}
	}
}

// FastPath describes the in-kernel fast path for metrics.
func (m *Manager) FastPath() FastPathStats {
	fp := m.sh.fp.Load()
	active := fp != nil && !fp.gone.Load()
	st := m.fpCounts.stats(active)
	if active {
		st.By = fp.table.Name()
	}
	return st
}

// refreshFastPath credits what the kernel forwarded to the channels, so
// figures read now are exact.
func (m *Manager) refreshFastPath() {
	if fp := m.sh.fp.Load(); fp != nil {
		fp.refresh(0)
	}
}
