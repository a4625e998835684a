// `ipfly status`: what ipfly-snapshotter serves lazily — each lazy snapshot with its layer
// digest, blob CID, bytes fetched vs blob size — and the fallback counts (layers containerd had
// to download, by reason). Reads the snapshotter's /status JSON (snapshotter.metrics_listen).
#pragma once

#include <optional>
#include <string>

#include "cli/common.h"

namespace ipfly::cli {

struct StatusOptions {
  std::string snapshotter;  // URL or HOST:PORT of the metrics listener; "" = from the config
  bool json = false;        // print the raw /status document
  bool all = false;         // also list ordinary (non-lazy) snapshots
};
std::optional<CliError> CmdStatus(const GlobalOptions& g, const StatusOptions& o);

}  // namespace ipfly::cli
