// ipfly-registry: an OCI distribution v1.1 server whose blobs live in IPFS.
//
// Endpoints (see README.md for the full list):
//   /v2/...                         distribution API (pull, push, tags, catalog, referrers)
//   /ipfly/v1/layers/{digest}       resolver for snapshotters: {cid, index_cid, size, mediaType}
//   /ipfs/{cid}?format=raw|car      trustless gateway over this registry's own blocks
//   /metrics                        Prometheus text
//
// Threading: cpp-httplib with a fixed worker pool (one connection per worker at a time).
// Every handler is thread-safe: the catalog serialises its own statements, the Fetcher and the
// UnixfsReader are thread-safe, upload sessions carry their own mutex.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "core/base/config.h"
#include "core/base/result.h"

namespace ipfly::registry {

struct ServerOptions {
  Config config;       // registry.root must be set
  size_t threads = 0;  // HTTP worker threads (0 = default: 128)
};

class RegistryServer {
 public:
  // Opens the catalog (<root>/catalog.db), the block stores (per config) and clears stale
  // upload spools (<root>/uploads). Errors: kIo, kInvalidArgument.
  static Result<std::unique_ptr<RegistryServer>> Create(ServerOptions options);
  ~RegistryServer();
  RegistryServer(const RegistryServer&) = delete;
  RegistryServer& operator=(const RegistryServer&) = delete;

  // Binds host:port (port 0 = any); returns the bound port.
  Result<int> Bind(const std::string& host, int port);
  // Serves until Stop(). Returns when the listener is closed and in-flight requests finished.
  Status Serve();
  // Thread-safe, idempotent; may be called from any thread (not from a signal handler).
  void Stop();

  struct Impl;

 private:
  explicit RegistryServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfly::registry
