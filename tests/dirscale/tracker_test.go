package dirscale

import (
	"context"
	"encoding/xml"
	"fmt"
	"testing"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/jid"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/relayd/jinglenodes"
	"github.com/jnrelay/jnrelay/relayd/xmppsession"
	"github.com/jnrelay/jnrelay/tests/harness"
)

// startTracker starts the real relayd that reads the directory: the
// account tracker@localhost on each server (sessions t1, t2), each
// reading its server's node. It returns relayd and its two addresses
// once both sessions fetched their node (and so are subscribed).
func startTracker(ctx context.Context, t *testing.T, srvs []*harness.XMPPServer, nodes []string) (*harness.Relayd, []string) {
	t.Helper()
	cfg := config.Default()
	cfg.PublicAddress = "127.0.0.1"
	cfg.ListenAddress = "127.0.0.1"
	cfg.Ports = config.PortRange{Min: 45300, Max: 45399}
	cfg.STUN.Enabled = false
	cfg.Channel.FastPath = "off"
	cfg.Reconnect = config.Reconnect{MinSeconds: 0.2, MaxSeconds: 1}
	cfg.Limits.MaxChannelsPerDomain = -1
	// Nothing is refreshed during a run: every change is a notification.
	cfg.Directory.RefreshSeconds = 3600
	for i, srv := range srvs {
		name := fmt.Sprintf("t%d", i+1)
		cfg.XMPP = append(cfg.XMPP, config.Service{Name: name, Type: "client", Server: srv.C2S.String(),
			JID: "tracker@" + srv.Domain, Password: "trackerpw", CAFile: srv.CAFile})
		cfg.Directory.Subscribe = append(cfg.Directory.Subscribe, config.DirectoryNode{Service: srv.PubsubDomain, Node: nodes[i], Session: name})
	}
	rd, err := harness.StartRelayd(relaydBin, "", t.TempDir(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		rd.Stop()
		if t.Failed() {
			logs := rd.Logs()
			t.Logf("tracker logs (tail):\n%s", logs[max(0, len(logs)-16<<10):])
		}
	})
	var addrs []string
	for i, srv := range srvs {
		name := fmt.Sprintf("t%d", i+1)
		online, err := rd.WaitLog(ctx, "xmpp client online", 1, func(r harness.LogRecord) bool { return r.Str("session") == name })
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, online.Str("address"))
		if _, err := rd.WaitLog(ctx, "directory: fetched", 1, func(r harness.LogRecord) bool {
			return r.Str("node") == srv.PubsubDomain+"/"+nodes[i]
		}); err != nil {
			t.Fatal(err)
		}
	}
	return rd, addrs
}

// logTime is when relayd logged rec.
func logTime(rec harness.LogRecord) (time.Time, error) {
	return time.Parse(time.RFC3339Nano, rec.Str("time"))
}

// learnedAll waits until the tracker has learned every address in want
// at least once and returns the time of the last of those records.
func learnedAll(ctx context.Context, rd *harness.Relayd, want map[string]bool) (time.Time, error) {
	for n := len(want); ; n++ {
		if _, err := rd.WaitLog(ctx, "directory: relay learned", n, nil); err != nil {
			return time.Time{}, err
		}
		seen := map[string]bool{}
		var last time.Time
		rd.Count("directory: relay learned", func(r harness.LogRecord) bool {
			if a := r.Str("relay"); want[a] && !seen[a] {
				seen[a] = true
				last, _ = logTime(r)
			}
			return false
		})
		if len(seen) == len(want) {
			return last, nil
		}
	}
}

// servicesEntries is a <services/> answer: one element per service.
type servicesEntries struct {
	Entries []struct {
		XMLName xml.Name
		Address string `xml:"address,attr"`
	} `xml:",any"`
}

// lookup asks the tracker for its <services/> through s and returns the
// addresses listed and the round-trip time.
func lookup(ctx context.Context, s *xmppsession.Session, tracker string) ([]string, time.Duration, error) {
	to, err := jid.Parse(tracker)
	if err != nil {
		return nil, 0, err
	}
	req := xmlstream.Wrap(nil, xml.StartElement{Name: xml.Name{Space: jinglenodes.NS, Local: "services"}})
	var v servicesEntries
	qctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	began := time.Now()
	if err := s.Query(qctx, to, req, &v); err != nil {
		return nil, 0, fmt.Errorf("services of %s: %w", tracker, err)
	}
	rtt := time.Since(began)
	var out []string
	for _, e := range v.Entries {
		out = append(out, e.Address)
	}
	return out, rtt, nil
}
