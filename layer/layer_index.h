// The layer index: random access into an unmodified OCI/Docker layer blob (the SOCI idea, no
// conversion). It holds the file table of the layer's tar stream and the access points into the
// compressed blob, and is stored in IPFS as its own object (a UnixFS file; its CID is the
// "index CID"). Format: docs/layer-index.md.
//
// Built in one streaming pass over the blob (BuildLayerIndex): sha256 of the blob (the layer
// digest), decompression with access points (compression.h), tar parsing (tar.h), and a sha256
// of every span of the uncompressed stream, so that a span decompressed later is checked before
// anyone reads it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/digest.h"
#include "core/base/result.h"
#include "core/base/sha256.h"
#include "core/multiformats/cid.h"
#include "layer/compression.h"
#include "layer/tar.h"

namespace ipfly::layer {

// One path of the layer after tar semantics were applied (a later member with the same path
// replaces the earlier one, as extraction does; missing parent directories are implied).
struct IndexEntry {
  std::string path;  // normalised, "" = root
  EntryType type = EntryType::kFile;
  uint32_t mode = 0;  // 07777 bits
  uint32_t uid = 0, gid = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;
  uint64_t size = 0;         // regular files
  uint64_t data_offset = 0;  // regular files: offset of the content in the uncompressed stream
  std::string link_target;   // symlink target, or hard-link target path
  uint32_t dev_major = 0, dev_minor = 0;
  std::map<std::string, std::string> xattrs;
};

struct LayerIndex {
  // 2: sparse gzip windows (docs/layer-index.md). Version 1 indexes are still read.
  static constexpr uint32_t kFormatVersion = 2;

  std::optional<Digest> layer_digest;  // sha256 of the compressed blob
  std::optional<mf::Cid> blob_cid;     // the blob in IPFS (UnixFS file)
  Compression compression = Compression::kNone;
  uint64_t compressed_size = 0;
  uint64_t uncompressed_size = 0;
  uint64_t span = 0;                    // requested checkpoint spacing
  uint64_t frames = 0;                  // zstd data frames / gzip members
  bool seekable = true;                 // false: single-frame zstd; readers fetch the layer whole
  std::vector<AccessPoint> points;      // increasing uncompressed offsets, first at 0
  std::vector<Sha256Hash> span_hashes;  // sha256 of [points[i], points[i+1]) (last: to end)
  std::vector<IndexEntry> entries;      // parents before children; entries[0] is the root

  // Versioned binary encoding, zstd-compressed, with a trailing sha256 (magic "IPFLYIX1").
  Bytes Encode() const;
  // Strict: kCorrupt for bad magic/checksum/structure, kUnsupported for a newer version.
  static Result<LayerIndex> Decode(ByteView bytes);

  // [start, end) of span i in the uncompressed stream.
  uint64_t SpanStart(size_t i) const { return points[i].uncompressed_offset; }
  uint64_t SpanEnd(size_t i) const {
    return i + 1 < points.size() ? points[i + 1].uncompressed_offset : uncompressed_size;
  }
  // The span containing uncompressed offset `off` (off < uncompressed_size).
  size_t SpanOf(uint64_t off) const;
};

struct BuildOptions {
  uint64_t span = 512ull << 10;  // default: docs/layer-index.md ("Span size")
  bool sparse_windows = true;    // IndexerOptions::sparse_windows
};

// Streaming builder: feed the compressed blob in order, then Finish.
class LayerIndexBuilder {
 public:
  explicit LayerIndexBuilder(BuildOptions options = {});
  ~LayerIndexBuilder();
  LayerIndexBuilder(const LayerIndexBuilder&) = delete;
  LayerIndexBuilder& operator=(const LayerIndexBuilder&) = delete;

  Status Feed(ByteView compressed);
  // Errors: kCorrupt (bad compression or tar, with offsets), kUnsupported (e.g. GNU sparse).
  Result<LayerIndex> Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Applies tar member order semantics (later wins, implied parents, hard links resolved to an
// existing regular file) to the raw members. Exposed for tests.
Result<std::vector<IndexEntry>> ResolveEntries(std::vector<TarEntry> members);

}  // namespace ipfly::layer
