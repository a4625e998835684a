// Powergate (Filecoin) commands of the ipfly CLI; all need [powergate] address in the config
// (token from [powergate] token or the variable named by token_env, IPFLY_POWERGATE_TOKEN):
//
//   ipfly archive TARGET... [--hot] [--wait] [--registry URL]
//       TARGET is a CID (a layer blob, a layer index, any UnixFS object) or an image reference
//       REPO:TAG / REPO@DIGEST of an ipfly-registry: its layers' blob and index CIDs come from
//       the registry's resolver (/ipfly/v1/layers/<digest>). For each CID: StageCid (Powergate
//       pins OUR CID from the IPFS network; Stage would re-add the bytes as CIDv0), then
//       ApplyStorageConfig with the user's default config, cold (Filecoin) enabled and hot
//       storage only with --hot. Prints the job ids; --wait watches them to the end. Jobs are
//       recorded in <state_dir>/archive.json.
//   ipfly archive status [CID...]
//       For each CID (default: every archived or thawed CID recorded in state_dir): hot/cold
//       state, size, Filecoin deals, queued/executing jobs, and the recorded jobs' states.
//   ipfly thaw CID... [--wait]
//       Starts a retrieval from Filecoin into Powergate's hot storage now (ApplyStorageConfig
//       hot.enabled + allow_unfreeze + unfreeze_max_price), recorded in <state_dir>/jobs.json so
//       reads (CLI, snapshotter, registry) follow the same job. --wait watches it to the end.
//
// `ipfly status` also prints the cold retrievals (PrintColdRetrievals).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "cli/common.h"

namespace ipfly::cli {

struct ArchiveOptions {
  std::vector<std::string> targets;
  std::string registry;
  bool hot = false;
  bool wait = false;
};
std::optional<CliError> CmdArchive(const GlobalOptions& g, const ArchiveOptions& o);

struct ArchiveStatusOptions {
  std::vector<std::string> cids;
};
std::optional<CliError> CmdArchiveStatus(const GlobalOptions& g, const ArchiveStatusOptions& o);

struct ThawOptions {
  std::vector<std::string> cids;
  bool wait = false;
};
std::optional<CliError> CmdThaw(const GlobalOptions& g, const ThawOptions& o);

// Prints the cold retrievals (thaw jobs) for `ipfly status`: live from the snapshotter's
// /metrics at `metrics_url` when it reports them, else from the local state_dir. Prints nothing
// when Powergate is not configured.
void PrintColdRetrievals(const Config& config, const std::string& metrics_url);

}  // namespace ipfly::cli
