// Package log carries a *slog.Logger in a context so that every layer logs
// with the fields (rpc, reqid, podsandboxid, containerid, image) that the
// server interceptor and the handlers attached.
package log

import (
	"context"
	"log/slog"
)

type loggerKey struct{}

// G returns the logger stored in ctx, or slog.Default().
func G(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.Default()
}

// WithLogger returns a context carrying l.
func WithLogger(ctx context.Context, l *slog.Logger) context.Context {
	return context.WithValue(ctx, loggerKey{}, l)
}

// With returns a context whose logger has the extra attributes args.
func With(ctx context.Context, args ...any) context.Context {
	return WithLogger(ctx, G(ctx).With(args...))
}
