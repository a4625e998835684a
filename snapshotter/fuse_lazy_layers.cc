#include "snapshotter/fuse_lazy_layers.h"

namespace ipfly::snapshotter {

// Placeholder while the FUSE-backed implementation is written (same session); the service
// treats this error as "lazy layers disabled" and falls back to overlay snapshots.
Result<std::unique_ptr<LazyLayers>> MakeFuseLazyLayers(const Config& config,
                                                       const std::string& root_dir) {
  (void)config;
  (void)root_dir;
  return Error(Errc::kUnimplemented, "lazy layers are not built into this binary yet");
}

}  // namespace ipfly::snapshotter
