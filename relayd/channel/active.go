package channel

// Active is the number of live channels (cheaper than Totals: no
// counters are summed, so it can be asked on every request).
func (m *Manager) Active() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.channels)
}
