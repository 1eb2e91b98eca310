package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// shutdownGrace bounds how long Serve waits for requests in flight once
// its context is done.
const shutdownGrace = 5 * time.Second

// Serve answers API requests on ln (the unix socket from ListenUnix or
// systemd, or the listener from ListenTCP) until ctx is done, then shuts
// down gracefully (requests in flight get shutdownGrace to finish, and a
// configuration change in flight always completes) and returns nil. It returns an error if the listener fails first. ln is
// closed on return.
func (a *API) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           a,
		ConnContext:       a.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      a.opts.ApplyTimeout + 30*time.Second, // a PUT waits for the apply
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("provisioning api on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
	}
	// A configuration change in flight runs to its end (applied and
	// saved, or neither; bounded by ApplyTimeout) before Serve returns.
	a.writeSem <- struct{}{}
	<-a.writeSem
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("provisioning api on %s: %w", ln.Addr(), err)
	}
	return nil
}

// ListenTCP opens the optional TCP listener (APIOptions.TCP), loading the
// bearer token first or creating it on first start. Connections from
// outside the local networks (see localNetwork) are closed unanswered. It
// returns nil, nil when TCP is off.
func (a *API) ListenTCP(ctx context.Context) (net.Listener, error) {
	if a.opts.TCP == "" {
		return nil, nil
	}
	if a.tokens == nil {
		return nil, errors.New("provisioning api: a TCP listener needs a state directory for its token")
	}
	if err := a.tokens.ensure(); err != nil {
		return nil, fmt.Errorf("provisioning api: %w", err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", a.opts.TCP)
	if err != nil {
		return nil, fmt.Errorf("provisioning api: %w", err)
	}
	return localOnly{Listener: ln, log: a.log, refused: &a.refusedRemote}, nil
}
