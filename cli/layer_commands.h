// `ipfly index`, `ipfly ls`, `ipfly mount`: layer indexes and lazy FUSE mounts of layers.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cli/common.h"

namespace ipfly::cli {

struct IndexOptions {
  std::string blob;  // a local blob file, or the CID of a blob in IPFS
  std::string span = "512KiB";
};
std::optional<CliError> CmdIndex(const GlobalOptions& g, const IndexOptions& o);

struct LsOptions {
  std::string index_cid;
  std::string path;  // directory or file inside the layer; "" = everything
};
std::optional<CliError> CmdLs(const GlobalOptions& g, const LsOptions& o);

struct MountOptions {
  std::vector<std::string> layers;   // LAYER_CID..., then the mount directory (last)
  std::vector<std::string> indexes;  // --index INDEX_CID, one per layer, in the same order
  bool overlay = false;              // several layers as one read-only overlay (first = lowest)
  bool prefetch = false;             // background fetch of the whole layer(s)
};
std::optional<CliError> CmdMount(const GlobalOptions& g, const MountOptions& o);

}  // namespace ipfly::cli
