// The seam between the snapshot service (gRPC + overlay metadata) and lazy layers (resolver +
// FUSE). The service decides *when* a layer may be lazy and records it; a LazyLayers
// implementation decides *whether* it can be (labels -> CIDs) and serves its directory.
#pragma once

#include <cstdint>
#include <map>
#include <set>
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
    uint64_t span_cache_bytes = 0;  // decompressed bytes of the layer in its span cache
    bool in_use = false;            // in the chain of an active snapshot or view (SetInUse)
  };
  virtual std::vector<LayerStatus> Layers() = 0;

  // Span cache cap. The service tells which attached ids (as given to Attach) are in use: in the
  // parent chain of an active snapshot (a container's rootfs, an unpack in progress) or a view.
  // Each call replaces the previous set. When the span caches of all layers together exceed
  // the configured cap, the caches of layers none of whose ids is in use are dropped, least
  // recently read first; layers in use are never evicted. Default: no cap (ignored).
  virtual void SetInUse(const std::set<std::string>& ids) { (void)ids; }

  struct SpanCacheStatus {
    uint64_t bytes = 0;            // span cache bytes of all attached layers
    uint64_t max_bytes = 0;        // the cap (0 = none)
    uint64_t evicted_layers = 0;   // span caches dropped by the cap (counter)
    uint64_t evicted_bytes = 0;    // bytes they held (counter)
    uint64_t over_cap_in_use = 0;  // times the cap was exceeded by layers in use alone (counter)
  };
  virtual SpanCacheStatus SpanCache() { return {}; }

  // Extra Prometheus text lines (e.g. the on-demand fetch latency histogram); "" if none.
  virtual std::string MetricsText() { return {}; }
};

}  // namespace ipfly::snapshotter
