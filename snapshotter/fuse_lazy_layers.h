// LazyLayers served from one FUSE mount: layer indexes and blobs come from IPFS through the
// configured block sources; each lazy snapshot is a top-level directory of the mount.
#pragma once

#include <memory>
#include <string>

#include "core/base/config.h"
#include "core/base/result.h"
#include "snapshotter/lazy_layers.h"

namespace ipfly::snapshotter {

// Mounts the FUSE filesystem at <root_dir>/lazy (a stale mount left by a crash is cleaned
// first) and keeps per-layer state (cached indexes, span caches) under <root_dir>/layers.
// Uses config.sources / store / cache / fetch and config.snapshotter (resolver URL,
// min_lazy_size, background_fetch, fuse_*, span_cache_max_bytes). The returned object unmounts on
// destruction.
//
// Span cache cap (span_cache_max_bytes, 0 = none): an evictor thread, woken when a span written
// takes the running total over the cap and every 30 s, drops whole span caches of layers not in
// use (see LazyLayers::SetInUse), least recently read first, down to 90 % of the cap. Layers in
// use are never evicted; their excess is logged once per episode and counted. Evicted layers
// stay attached and are fetched again on their next read.
Result<std::unique_ptr<LazyLayers>> MakeFuseLazyLayers(const Config& config,
                                                       const std::string& root_dir);

}  // namespace ipfly::snapshotter
