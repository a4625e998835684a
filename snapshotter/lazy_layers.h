// The seam between the snapshot service (gRPC + overlay metadata) and lazy layers (resolver +
// FUSE). The service decides *when* a layer may be lazy and records it; a LazyLayers
// implementation decides *whether* it can be (labels -> CIDs) and serves its directory.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "core/base/result.h"

namespace ipfly::snapshotter {

using Labels = std::map<std::string, std::string>;

// What identifies a lazily served layer. Persisted by the service with the snapshot (all fields
// are plain strings so the metadata store needs no knowledge of CIDs).
struct RemoteLayer {
  std::string blob_cid;     // UnixFS file of the unmodified layer blob
  std::string index_cid;    // layer index ("" = build it from the blob; costs a full read)
  std::string digest;       // "sha256:..." of the layer blob, "" if the labels did not say
  uint64_t size = 0;        // compressed blob size, 0 if unknown
  std::string resolved_by;  // "ipfly-labels" | "remote-urls" | "resolver" (for status/metrics)
};

// Thread-safe. Errors from Resolve are fallback reasons: the service logs them, counts them by
// Error::code() / a short reason, and creates an ordinary snapshot instead.
class LazyLayers {
 public:
  virtual ~LazyLayers() = default;

  // Labels of a Prepare carrying containerd.io/snapshot.ref -> the layer to serve lazily, in the
  // order DESIGN.md gives. kNotFound when nothing identifies the layer (plain fallback),
  // kFailedPrecondition when it is identified but must not be lazy (not seekable, below
  // min_lazy_size), other codes for failures (resolver down, index unreadable).
  virtual Result<RemoteLayer> Resolve(const Labels& labels) = 0;

  // Makes the layer's file tree available for snapshot `id` (a stable id chosen by the service,
  // e.g. its numeric snapshot id) and returns the absolute directory to use as overlay lowerdir.
  // Idempotent: attaching an attached id returns the same directory. Must not need the network
  // when the index is already cached locally (restart path).
  virtual Result<std::string> Attach(const std::string& id, const RemoteLayer& layer) = 0;

  // Checks that `id` is attached and answering; re-attaches it if not. Returns its directory.
  virtual Result<std::string> EnsureAttached(const std::string& id, const RemoteLayer& layer) = 0;

  // Releases the layer of a removed snapshot (its span cache data may be evicted afterwards).
  // kNotFound if not attached (callers treat that as success).
  virtual Status Detach(const std::string& id) = 0;

  // Counters for `ipfly status` / metrics: one line per attached layer.
  struct LayerStatus {
    std::string id;
    RemoteLayer layer;
    std::string dir;
    uint64_t bytes_fetched = 0;  // compressed bytes fetched for this layer so far
    uint64_t blob_size = 0;
    bool background_complete = false;
  };
  virtual std::vector<LayerStatus> Layers() = 0;

  // Extra Prometheus text lines (e.g. the on-demand fetch latency histogram); "" if none.
  virtual std::string MetricsText() { return {}; }
};

}  // namespace ipfly::snapshotter
