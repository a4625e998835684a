// Counters of ipfly-snapshotter and their two renderings: Prometheus text (/metrics) and the
// JSON document `ipfly status` reads (/status). Thread-safe.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "core/base/result.h"

namespace ipfly::snapshotter {

class SnapshotService;

class Metrics {
 public:
  void CountLazyMount();
  // reason: not_found | not_seekable | too_small | unavailable | attach_failed | disabled | error
  void CountFallback(const std::string& reason);
  void CountRpc(const std::string& method, const std::string& code);

  uint64_t lazy_mounts() const;
  std::map<std::string, uint64_t> fallbacks() const;
  std::map<std::pair<std::string, std::string>, uint64_t> rpcs() const;

 private:
  mutable std::mutex mu_;
  uint64_t lazy_mounts_ = 0;
  std::map<std::string, uint64_t> fallbacks_;
  std::map<std::pair<std::string, std::string>, uint64_t> rpcs_;
};

// Prometheus text exposition of the service's counters and its lazy layers.
std::string RenderPrometheus(SnapshotService& service);
// {"snapshots":[{key, kind, parent, id, lazy:{..., bytes_fetched, blob_size, span_cache_bytes,
//  in_use}}], "fallbacks":{...}, "lazy_mounts": n, "lazy_enabled": bool,
//  "span_cache":{bytes, max_bytes, evicted_layers, evicted_bytes, over_cap_in_use} (lazy only)}
std::string RenderStatusJson(SnapshotService& service);

// HTTP server for /metrics and /status on "host:port" (loopback expected). Stops on destruction.
class MetricsServer {
 public:
  static Result<std::unique_ptr<MetricsServer>> Start(const std::string& listen,
                                                      SnapshotService* service);
  ~MetricsServer();
  int port() const { return port_; }

 private:
  MetricsServer() = default;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace ipfly::snapshotter
