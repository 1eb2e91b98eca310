package daemon

// FastPathStatus is the in-kernel fast path as status shows it: how a
// donor tells whether the kernel relays the calls, and if not, why.
type FastPathStatus struct {
	Mode          string            `json:"mode"`           // channel.fast_path as configured
	Active        bool              `json:"active"`         // a kernel table is installed
	By            string            `json:"by,omitempty"`   // what forwards, while active
	OffloadedLegs int               `json:"offloaded_legs"` // legs the kernel forwards now
	NotOffloaded  map[string]uint64 `json:"not_offloaded"`  // legs kept in userspace since start, by reason
}

func (d *Daemon) fastPathStatus() FastPathStatus {
	fp := d.dp.FastPath()
	d.mu.Lock()
	mode := d.cfg.Channel.FastPath
	d.mu.Unlock()
	return FastPathStatus{Mode: string(mode), Active: fp.Active, By: fp.By, OffloadedLegs: fp.OffloadedNow, NotOffloaded: fp.NotOffloaded}
}

// legPaths names who forwards each leg of a channel now.
func legPaths(inKernel [2]bool) map[string]string {
	out := make(map[string]string, 2)
	for l, name := range [2]string{"rtp", "rtcp"} {
		out[name] = "userspace"
		if inKernel[l] {
			out[name] = "kernel"
		}
	}
	return out
}
