// gRPC boundary of ipfly-snapshotter: containerd.services.snapshots.v1.Snapshots over a unix
// socket, backed by a SnapshotService. Errc values become the gRPC codes containerd's errdefs
// maps back (NotFound, AlreadyExists, FailedPrecondition, InvalidArgument, Unavailable,
// Unimplemented); anything else is Unknown.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "core/base/result.h"
#include "snapshotter/snapshot_service.h"

namespace ipfly::snapshotter {

grpc::Status ToGrpcStatus(const Error& e);

class GrpcServer {
 public:
  // Listens on `socket_path` (parent dirs created, a stale socket file removed, mode 0600).
  // `service` must outlive the server.
  static Result<std::unique_ptr<GrpcServer>> Start(const std::string& socket_path,
                                                   SnapshotService* service);
  ~GrpcServer();  // Shutdown() + wait
  // Stops accepting RPCs and waits (up to a short deadline) for running ones. Idempotent.
  void Shutdown();

 private:
  GrpcServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfly::snapshotter
