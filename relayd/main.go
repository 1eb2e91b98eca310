// Command relayd is the jnrelay Jingle Nodes (XEP-0278) relay daemon: it
// registers with XMPP services, answers channel requests by allocating
// relay ports, and forwards UDP between the two parties of each call.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"os/user"
	"strconv"
	"syscall"
	"time"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/relayd/daemon"
	"github.com/jnrelay/jnrelay/relayd/metrics"
	"github.com/jnrelay/jnrelay/relayd/supervise"
)

// version is stamped at build time (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main without the process exit, for tests.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("relayd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "/etc/jnrelay/relayd.json", "configuration `file`")
	check := fs.String("check-config", "", "validate the configuration `file`, print the result and exit")
	ports := fs.String("firewall-ports", "", "print the ports callers reach relayd on under the configuration `file`, one \"udp|tcp PORT[-PORT]\" a line, and exit")
	showVersion := fs.Bool("version", false, "print the version and exit")
	broker := fs.String("offload-broker", "", "run the fast path's offload broker on the unix `socket` (or the one systemd passes) instead of the relay")
	offloadSocket := fs.String("offload-socket", "", "the offload broker's unix `socket`, when the configuration's channel.offload_socket names none")
	brokerUser := fs.String("offload-user", "", "with -offload-broker: the `user` (name or uid) relayd runs as, the only one served")
	var api apiFlags
	fs.StringVar(&api.socket, "api-socket", defaultAPISocket, "provisioning API unix `socket` (\"\" = none)")
	fs.StringVar(&api.tcp, "api-tcp", "", "also serve the provisioning API on `host:port` (bearer token in the state directory)")
	fs.IntVar(&api.adminGID, "api-admin-gid", -1, "`gid` whose members may read the API (root may write)")
	fs.StringVar(&api.adminGroup, "api-admin-group", "", "group `name` whose members may read the API (instead of -api-admin-gid)")
	fs.StringVar(&api.stateDir, "state-dir", "/var/lib/jnrelay", "state `directory` (API token)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: relayd [flags]              run the relay\n       relayd [flags] COMMAND ...    talk to a running relay (status, config, channels, logs, token)\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		return runCommand(fs.Args(), api, stdout, stderr)
	}
	switch {
	case *showVersion:
		fmt.Fprintln(stdout, "relayd", version)
		return 0
	case *check != "":
		if _, err := config.Load(*check); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		fmt.Fprintf(stdout, "%s: configuration valid\n", *check)
		return 0
	case *ports != "":
		return printFirewallPorts(*ports, stdout, stderr)
	case *broker != "":
		return runOffloadBroker(*broker, *brokerUser, stderr)
	}
	store := provision.NewStore(*configPath)
	cfg, err := loadConfig(store, os.Stderr)
	if err != nil {
		fmt.Fprintln(stderr, "relayd:", err)
		return 1
	}
	// Recent logs are also kept in RAM for the API (never on flash).
	logs := daemon.NewLogRing(500)
	log := newLogger(cfg.Log, io.MultiWriter(stderr, logs))
	if api.adminGroup != "" {
		gid, err := lookupGroup(api.adminGroup)
		if err != nil {
			// Not fatal: the relay still serves calls and root can still
			// use the API; only the read-only group is missing.
			log.Error("api admin group unknown; only root may use the provisioning API", "group", api.adminGroup, "err", err)
		} else {
			api.adminGID = gid
		}
	}
	if err := serve(context.Background(), cfg, store, api, *offloadSocket, logs, log); err != nil {
		log.Error("relayd stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == config.LogJSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the relay until it is told to stop, telling systemd how it
// does (see package supervise). Signals:
//   - SIGTERM (systemctl stop): drain — no new channels, live calls go on
//     for up to channel.drain_seconds — then exit; a second SIGTERM or a
//     SIGINT ends the wait at once.
//   - SIGINT (Ctrl-C): stop at once (live channels end with killed events).
//   - SIGHUP: reload the configuration file and apply it live, as the
//     provisioning API does.
//   - SIGUSR2, only with RELAYD_TEST_WEDGE=1 in the environment: hang the
//     data plane, to test the watchdog.
//
// ctx ending stops relayd at once too (for tests).
func serve(ctx context.Context, cfg config.Config, store *provision.Store, api apiFlags, offloadSocket string, logs *daemon.LogRing, log *slog.Logger) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	if os.Getenv("RELAYD_TEST_WEDGE") == "1" {
		log.Warn("RELAYD_TEST_WEDGE=1: SIGUSR2 will hang the data plane (a watchdog test switch, never for production)")
		signal.Notify(sigs, syscall.SIGUSR2)
	}
	sd := supervise.New(log.With("part", "systemd"))

	d, err := daemon.New(ctx, cfg, daemon.Options{Logger: log, Version: version, StateDir: api.stateDir, OffloadSocket: offloadSocket})
	if err != nil {
		return err
	}
	defer d.Close()
	apiCtx, stopAPI := context.WithCancel(ctx)
	defer stopAPI()
	serveAPI(apiCtx, api, store, d, logs, log)
	if cfg.Metrics.Listen != "" {
		stop, err := serveMetrics(cfg.Metrics.Listen, d, log)
		if err != nil {
			return err
		}
		defer stop()
	}
	// The data plane is listening and the configuration valid.
	sd.Ready(d.StatusLine())

	// The watchdog is pinged from this loop, after the data plane answered
	// a probe: a stuck data plane or a stuck loop both stop the pings.
	var check <-chan time.Time
	if iv := sd.CheckInterval(); iv > 0 {
		t := time.NewTicker(iv)
		defer t.Stop()
		check = t.C
		log.Info("systemd watchdog on", "check_every", iv.String())
	}
	statusTick := time.NewTicker(statusEvery)
	defer statusTick.Stop()

	var drained chan int // set while draining
	drainCtx, stopDrain := context.WithCancel(ctx)
	defer stopDrain()
	for {
		select {
		case <-ctx.Done():
			return nil
		case left := <-drained:
			if left > 0 {
				log.Info("ending the calls left after the drain", "channels", left)
			}
			return nil
		case <-check:
			_ = sd.Check(ctx, d.Check)
		case <-statusTick.C:
			sd.Status(d.StatusLine())
		case sig := <-sigs:
			switch sig {
			case syscall.SIGINT:
				log.Info("SIGINT: stopping now")
				return nil
			case syscall.SIGTERM:
				if drained != nil {
					log.Info("second SIGTERM: stopping now")
					stopDrain()
					continue
				}
				grace := d.Config().Channel.Drain()
				drained = make(chan int, 1)
				go func() { drained <- d.Drain(drainCtx, grace) }()
				sd.Stopping(d.StatusLine())
			case syscall.SIGHUP:
				sd.Reloading()
				reload(ctx, d, store, log)
				sd.Reloaded()
				sd.Status(d.StatusLine())
			case syscall.SIGUSR2:
				d.WedgeDataPlane()
			}
		}
	}
}

// statusEvery is how often systemd's STATUS= line is refreshed (sent only
// when it changed).
const statusEvery = 5 * time.Second

// reload applies the configuration file (SIGHUP); a bad file or a failed
// apply leaves the running configuration in force.
func reload(ctx context.Context, d *daemon.Daemon, store *provision.Store, log *slog.Logger) {
	next, err := config.Load(store.Path())
	if err != nil {
		log.Error("reload refused: the configuration file is invalid; keeping the running one", "err", err)
		return
	}
	if err := d.Apply(ctx, next); err != nil {
		log.Error("reload failed; the previous configuration is back in force", "err", err)
	}
}

// lookupGroup returns the gid of a group name (or a numeric gid).
func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, err
	}
	return strconv.Atoi(g.Gid)
}

// serveMetrics serves /metrics, and nothing else, on addr.
func serveMetrics(addr string, d *daemon.Daemon, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(metrics.NewRegistry(d.MetricsSources(), version)))
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		// A scraper that stops reading must not hold one of the few
		// scrapes in flight (metrics.Handler) for ever; Prometheus' default
		// scrape timeout is 10 s.
		WriteTimeout: 10 * time.Second,
	}
	go srv.Serve(ln)
	log.Info("metrics served", "address", ln.Addr().String())
	return func() { srv.Close() }, nil
}
