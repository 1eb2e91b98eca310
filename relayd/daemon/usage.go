package daemon

import (
	"time"

	"github.com/jnrelay/jnrelay/relayd/channel"
)

// usageSampleEvery is how often the usage meter adds up the data plane's
// traffic (quotas take effect within this).
const usageSampleEvery = 2 * time.Second

// relayedBytes is everything the data plane relayed since start, both
// directions.
func (d *Daemon) relayedBytes() uint64 {
	st := d.dp.Totals().Stats
	return st.Bytes[channel.LocalToRemote] + st.Bytes[channel.RemoteToLocal]
}

// sampleUsage feeds the usage meter until the daemon stops.
func (d *Daemon) sampleUsage() {
	defer d.wg.Done()
	t := time.NewTicker(usageSampleEvery)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-t.C:
			d.meter.Sample(d.relayedBytes())
		}
	}
}
