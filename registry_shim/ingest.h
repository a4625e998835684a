// Blob ingest: a complete, digest-checked file (an upload spool or a mirrored blob) is imported
// into the IPFS block store with an import profile (default kubo-v1, so CIDs match
// `ipfs add --cid-version=1`); when the bytes look like a layer (gzip, zstd or plain tar) a layer
// index is built in the same pass (layer/), stored in the same block store, and its CID returned.
#pragma once

#include <string>

#include "core/base/bytes.h"
#include "core/base/result.h"
#include "core/block.h"
#include "core/unixfs/importer.h"

namespace ipfly::registry {

struct IngestResult {
  std::string cid;        // UnixFS root of the blob
  std::string index_cid;  // "" when the blob is not an indexable layer
  uint64_t size = 0;
  std::string digest;  // sha256 from the layer index builder ("" when no index was built);
                       // callers check the digest while the bytes arrive
};

// Reads `path` once; the layer index is built on a helper thread in parallel with the import.
// The caller must already have checked the bytes against their digest. Index build failures are
// logged and leave index_cid empty (the blob is still served; the snapshotter then falls back to a
// plain pull). kIo on read errors, sink errors as they are.
Result<IngestResult> IngestFile(const std::string& path, const unixfs::ImportProfile& profile,
                                BlockSink* sink);

// Imports small in-memory bytes (manifests); returns the CID string.
Result<std::string> IngestBytes(ByteView data, const unixfs::ImportProfile& profile,
                                BlockSink* sink);

}  // namespace ipfly::registry
