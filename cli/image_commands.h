// Commands that talk to an ipfly-registry (or any OCI distribution registry, where noted) over
// plain HTTP:
//   ipfly search TERM [--registry URL] [--limit N]      Docker's /v1/search, printed like
//                                                       `docker search` (NAME, DESCRIPTION)
//   ipfly push OCI_ARCHIVE|OCI_DIR REPO:TAG --registry URL
//       pushes an OCI image layout (directory or tar archive: blobs, then manifests) with the v2
//       API and prints the manifest digest, the IPFS-format reference <host>/ipfs/REPO:TAG and
//       the blob CIDs from the registry's resolver (/ipfly/v1/layers/).
//   ipfly image export REF --registry URL [--to kubo=URL]
//       stores an image in IPFS the nerdctl / stargz-snapshotter way: the manifest(s) of the
//       registry's ipfs/ view (every descriptor carries urls ["ipfs://CID"]) are added to the
//       embedded store as UnixFS files (CIDv1, kubo-v1 profile), and so is the JSON OCI
//       descriptor of the root manifest; prints that descriptor's CID (the image reference for
//       `nerdctl pull ipfs://CID`, `ctr-remote image rpull --ipfs CID`). The blobs themselves
//       are already in IPFS (the registry's store; its gateway; a Kubo node with publish_kubo).
//       --to also dag/imports the descriptor and manifests into a Kubo node.
//   ipfly image import CID --registry URL --tag REPO:TAG
//       the reverse: reads the descriptor and everything it references by their ipfs:// URLs
//       through the fetch chain (embedded store, cache, --source), verifies every manifest and
//       blob against its digest and size, and pushes them (blobs, child manifests by digest,
//       the root manifest under the tag).
// The registry URL defaults to http://<[registry] listen> of the config. Pushes send
// `Authorization: Bearer $IPFLY_REGISTRY_TOKEN` when that variable is set.
#pragma once

#include <optional>
#include <string>

#include "cli/common.h"

namespace ipfly::cli {

struct SearchOptions {
  std::string term;
  std::string registry;
  int limit = 25;
  bool no_trunc = false;
};
std::optional<CliError> CmdSearch(const GlobalOptions& g, const SearchOptions& o);

struct PushOptions {
  std::string layout;  // OCI image layout directory or tar archive of one
  std::string ref;     // REPO:TAG
  std::string registry;
};
std::optional<CliError> CmdPush(const GlobalOptions& g, const PushOptions& o);

struct ImageExportOptions {
  std::string ref;  // REPO:TAG or REPO@sha256:...
  std::string registry;
  std::string to;  // kubo=URL
};
std::optional<CliError> CmdImageExport(const GlobalOptions& g, const ImageExportOptions& o);

struct ImageImportOptions {
  std::string cid;
  std::string registry;
  std::string tag;  // REPO:TAG
};
std::optional<CliError> CmdImageImport(const GlobalOptions& g, const ImageImportOptions& o);

}  // namespace ipfly::cli
