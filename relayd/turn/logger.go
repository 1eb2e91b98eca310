package turn

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/pion/logging"
)

// pionLogger hands pion's log lines to slog. pion logs every refused
// permission and malformed packet at Info or above, which anyone on the
// Internet can cause: those go to Debug; only pion's errors stay
// visible, at Warn. Nothing is formatted for a level that is off.
type pionLogger struct{ log *slog.Logger }

func (l pionLogger) NewLogger(scope string) logging.LeveledLogger {
	return pionLogger{log: l.log.With("pion", scope)}
}

func (l pionLogger) at(level slog.Level, msg string) {
	l.log.Log(context.Background(), level, msg)
}

func (l pionLogger) atf(level slog.Level, format string, args []any) {
	if l.log.Enabled(context.Background(), level) {
		l.at(level, fmt.Sprintf(format, args...))
	}
}

func (l pionLogger) Trace(msg string)                  {}
func (l pionLogger) Tracef(string, ...any)             {}
func (l pionLogger) Debug(msg string)                  { l.at(slog.LevelDebug, msg) }
func (l pionLogger) Debugf(format string, args ...any) { l.atf(slog.LevelDebug, format, args) }
func (l pionLogger) Info(msg string)                   { l.at(slog.LevelDebug, msg) }
func (l pionLogger) Infof(format string, args ...any)  { l.Info(fmt.Sprintf(format, args...)) }
func (l pionLogger) Warn(msg string)                   { l.at(slog.LevelDebug, msg) }
func (l pionLogger) Warnf(format string, args ...any)  { l.Warn(fmt.Sprintf(format, args...)) }
func (l pionLogger) Error(msg string)                  { l.at(slog.LevelWarn, msg) }
func (l pionLogger) Errorf(format string, args ...any) { l.atf(slog.LevelWarn, format, args) }
