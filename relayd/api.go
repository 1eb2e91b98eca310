package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/jnrelay/jnrelay/config"
	"github.com/jnrelay/jnrelay/provision"
	"github.com/jnrelay/jnrelay/relayd/daemon"
)

// apiFlags are where the provisioning API listens.
type apiFlags struct {
	socket     string // unix socket; "" = none
	tcp        string // optional host:port with bearer token
	adminGID   int    // group allowed to read (and its members' uid 0 to write)
	adminGroup string // the same group by name (resolved at start)
	stateDir   string // api-token lives here
}

// provisionDaemon adapts the daemon to what the API expects.
type provisionDaemon struct {
	d    *daemon.Daemon
	logs *daemon.LogRing
}

func (p provisionDaemon) Status() any                                      { return p.d.Status() }
func (p provisionDaemon) Channels() any                                    { return p.d.LiveList() }
func (p provisionDaemon) Usage() any                                       { return p.d.UsageHistory() }
func (p provisionDaemon) KillChannel(id string) bool                       { return p.d.KillChannel(id) }
func (p provisionDaemon) Logs(n int) []string                              { return p.logs.Last(n) }
func (p provisionDaemon) Apply(ctx context.Context, c config.Config) error { return p.d.Apply(ctx, c) }

// serveAPI starts the provisioning API on its unix socket (and TCP when
// asked). A listener that cannot be opened is logged, not fatal: the relay
// itself goes on serving calls.
func serveAPI(ctx context.Context, f apiFlags, store *provision.Store, d *daemon.Daemon, logs *daemon.LogRing, log *slog.Logger) {
	api := provision.NewAPI(provisionDaemon{d: d, logs: logs}, store, provision.APIOptions{
		AdminGID: f.adminGID, StateDir: f.stateDir, TCP: f.tcp, Logger: log.With("part", "api"),
	})
	// Under systemd socket activation (relayd-provision.socket) the socket
	// is already open and handed over; otherwise relayd creates it.
	if ln := activatedListener(log); ln != nil {
		log.Info("provisioning API listening", "socket", "systemd-activated")
		go api.Serve(ctx, ln)
	} else if f.socket != "" {
		if err := os.MkdirAll(filepath.Dir(f.socket), 0o755); err != nil {
			log.Error("provisioning socket not available", "path", f.socket, "err", err)
		} else if ln, err := provision.ListenUnix(ctx, f.socket, 0o660, f.adminGID); err != nil {
			log.Error("provisioning socket not available", "path", f.socket, "err", err)
		} else {
			log.Info("provisioning API listening", "socket", f.socket)
			go api.Serve(ctx, ln)
		}
	}
	if ln, err := api.ListenTCP(ctx); err != nil {
		log.Error("provisioning TCP listener not available", "address", f.tcp, "err", err)
	} else if ln != nil {
		log.Info("provisioning API listening", "address", ln.Addr().String(), "token_file", filepath.Join(f.stateDir, provision.TokenFile))
		go api.Serve(ctx, ln)
	}
}

// activatedListener returns the provisioning socket passed by systemd, if
// any (the first listener; its name does not matter).
func activatedListener(log *slog.Logger) net.Listener {
	lns, err := activation.Listeners()
	if err != nil {
		log.Error("systemd socket activation", "err", err)
		return nil
	}
	for _, ln := range lns {
		if ln != nil {
			return ln
		}
	}
	return nil
}

// loadConfig reads the configuration through the store; if the file is
// invalid (never written so by relayd: someone edited it), the last-known
// good one is used and the problem logged loudly.
func loadConfig(store *provision.Store, stderr *os.File) (config.Config, error) {
	cfg, _, err := store.Load()
	if err == nil {
		return cfg, nil
	}
	if !errors.Is(err, provision.ErrInvalidFile) {
		return config.Config{}, err
	}
	good, _, lgErr := store.LoadLastGood()
	if lgErr != nil {
		return config.Config{}, err
	}
	fmt.Fprintf(stderr, "relayd: %v\nrelayd: starting from the last known good configuration %s%s\n", err, store.Path(), provision.LastGoodSuffix)
	return good, nil
}
