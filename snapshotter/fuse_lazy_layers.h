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
// min_lazy_size, background_fetch, fuse_*). The returned object unmounts on destruction.
Result<std::unique_ptr<LazyLayers>> MakeFuseLazyLayers(const Config& config,
                                                       const std::string& root_dir);

}  // namespace ipfly::snapshotter
