package gossip

import (
	"bytes"
	"context"
	"log"
	"log/slog"
	"strings"
)

// newStdLogger adapts a slog.Logger for serf and memberlist, which log through
// *log.Logger with "[LEVEL] " prefixes; the prefix becomes the slog level.
func newStdLogger(l *slog.Logger, component string) *log.Logger {
	return log.New(&levelWriter{log: l.With("component", component)}, "", 0)
}

type levelWriter struct {
	log *slog.Logger
}

func (w *levelWriter) Write(p []byte) (int, error) {
	msg := string(bytes.TrimSpace(p))
	level := slog.LevelInfo
	for prefix, l := range map[string]slog.Level{
		"[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug,
		"[INFO]": slog.LevelInfo, "[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[ERROR]": slog.LevelError,
	} {
		if strings.HasPrefix(msg, prefix) {
			level, msg = l, strings.TrimSpace(msg[len(prefix):])
			break
		}
	}
	if i := strings.Index(msg, ": "); i > 0 && i < 12 {
		msg = msg[i+2:] // drop the library's own "memberlist: " prefix
	}
	w.log.Log(context.Background(), level, msg)
	return len(p), nil
}
