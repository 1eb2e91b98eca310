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
	"syscall"
	"time"

	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/relayd/config"
	"github.com/jnrelay/jnrelay/relayd/daemon"
	"github.com/jnrelay/jnrelay/relayd/metrics"
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
	showVersion := fs.Bool("version", false, "print the version and exit")
	var api apiFlags
	fs.StringVar(&api.socket, "api-socket", "/run/jnrelay/api.sock", "provisioning API unix `socket` (\"\" = none)")
	fs.StringVar(&api.tcp, "api-tcp", "", "also serve the provisioning API on `host:port` (bearer token in the state directory)")
	fs.IntVar(&api.adminGID, "api-admin-gid", -1, "`gid` whose members may read the API (root may write)")
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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, store, api, logs, log); err != nil {
		log.Error("relayd stopped", "err", err)
		return 1
	}
	return 0
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.Level)) // validated by config
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// serve runs the relay until ctx is cancelled; SIGHUP reloads the
// configuration file and applies it live, as the provisioning API does.
func serve(ctx context.Context, cfg config.Config, store *provision.Store, api apiFlags, logs *daemon.LogRing, log *slog.Logger) error {
	d, err := daemon.New(ctx, cfg, log, version)
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
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			next, err := config.Load(store.Path())
			if err != nil {
				log.Error("reload refused: the configuration file is invalid; keeping the running one", "err", err)
				continue
			}
			if err := d.Apply(ctx, next); err != nil {
				log.Error("reload failed; the previous configuration is back in force", "err", err)
			}
		}
	}
}

// serveMetrics serves /metrics (and nothing else: client_golang registers
// expvar on the default mux, which must never be exposed) on addr.
func serveMetrics(addr string, d *daemon.Daemon, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics.Handler(metrics.NewRegistry(d.MetricsSources(), version)))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	log.Info("metrics served", "address", ln.Addr().String())
	return func() { srv.Close() }, nil
}
