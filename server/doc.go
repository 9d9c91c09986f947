// Package server implements the CRI gRPC services (k8s.io/cri-api runtime/v1)
// on top of crid's domain packages.
//
// It translates: requests are validated and converted to domain calls, domain
// results converted back, and domain errors (errdefs classes) mapped to gRPC
// codes in one place, the interceptor in interceptors.go. It holds no business
// logic and no state of its own beyond what wiring needs.
//
// One file per RPC (image_pull.go, image_list.go, …); the consumer-side
// interfaces of the leaves are in deps.go.
//
// Imports: imagestore, snapshotter, sandbox, cni, cgroupmgr, internal/*. It is
// the only package that imports k8s.io/cri-api and grpc/status.
package server
