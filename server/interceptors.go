package server

import (
	"context"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"

	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/crid-dev/crid/internal/log"
)

// reqSeq numbers requests so that the lines of one request can be found.
var reqSeq atomic.Uint64

// quietPrefixes name the RPCs kubelet polls constantly by kubelet; they log at Debug, everything
// else (the RPCs that change something) at Info.
var quietPrefixes = []string{"List", "Stream", "Status", "ImageStatus", "ContainerStatus",
	"PodSandboxStatus", "ImageFsInfo", "Version", "ContainerStats", "PodSandboxStats",
	"RuntimeConfig", "ExecSync", "GetContainerEvents"}

func rpcLevel(method string) slog.Level {
	for _, p := range quietPrefixes {
		if strings.HasPrefix(method, p) {
			return slog.LevelDebug
		}
	}
	return slog.LevelInfo
}

// shortMethod turns "/runtime.v1.ImageService/PullImage" into "PullImage".
func shortMethod(full string) string {
	return full[strings.LastIndexByte(full, '/')+1:]
}

// UnaryInterceptor gives every request a logger (rpc, reqid), logs the
// request's outcome once, turns a panic into an Internal error, and maps
// domain errors to gRPC codes. It is the only place errors are mapped.
func UnaryInterceptor(base *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		method := shortMethod(info.FullMethod)
		ctx = log.WithLogger(ctx, base.With("rpc", method, "reqid", reqSeq.Add(1)))
		start := time.Now()
		defer finish(ctx, method, start, &err)
		return handler(ctx, req)
	}
}

// StreamInterceptor does for streaming RPCs what UnaryInterceptor does.
func StreamInterceptor(base *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		method := shortMethod(info.FullMethod)
		ctx := log.WithLogger(ss.Context(), base.With("rpc", method, "reqid", reqSeq.Add(1)))
		start := time.Now()
		defer finish(ctx, method, start, &err)
		return handler(srv, &ctxStream{ServerStream: ss, ctx: ctx})
	}
}

// finish runs deferred at the end of every RPC: it turns a panic into an
// Internal error, logs the outcome once and maps the error to a gRPC code.
func finish(ctx context.Context, method string, start time.Time, err *error) {
	if p := recover(); p != nil {
		log.G(ctx).Error("panic in handler", "panic", p, "stack", string(debug.Stack()))
		*err = fmt.Errorf("panic in %s: %v: %w", method, p, errdefs.ErrInternal)
	}
	logOutcome(ctx, method, start, *err)
	*err = errgrpc.ToGRPC(*err)
}

func logOutcome(ctx context.Context, method string, start time.Time, err error) {
	l := log.G(ctx)
	elapsed := time.Since(start)
	if err != nil {
		lvl := outcomeLevel(err)
		l.Log(ctx, lvl, "request failed", "duration", elapsed, "error", err)
		return
	}
	l.Log(ctx, rpcLevel(method), "request done", "duration", elapsed)
}

// outcomeLevel is how loud a failed request is logged: ERROR only when it
// may be crid's fault. A request that does not fit the state of its
// object (kubelet's exec probe racing the container's exit, a name still
// reserved) is the client's race, worth a WARN; a request that is wrong or
// names nothing is the client's problem alone.
func outcomeLevel(err error) slog.Level {
	switch {
	case errdefs.IsNotFound(err), errdefs.IsInvalidArgument(err), errdefs.IsCanceled(err),
		status.Code(err) == codes.Unimplemented:
		return slog.LevelInfo
	case errdefs.IsFailedPrecondition(err), errdefs.IsAlreadyExists(err), errdefs.IsConflict(err):
		return slog.LevelWarn
	}
	return slog.LevelError
}

// ctxStream carries the request logger into a streaming handler.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *ctxStream) Context() context.Context { return s.ctx }
