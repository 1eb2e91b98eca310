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
	if err := fs.Parse(args); err != nil {
		return 2
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
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, "relayd:", err)
		return 1
	}
	log := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, cfg, *configPath, log); err != nil {
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
func serve(ctx context.Context, cfg config.Config, configPath string, log *slog.Logger) error {
	d, err := daemon.New(ctx, cfg, log, version)
	if err != nil {
		return err
	}
	defer d.Close()
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
			next, err := config.Load(configPath)
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
