// Random access into the uncompressed tar stream of a layer, through its layer index.
//
// A read maps to spans of the uncompressed stream (span i = [points[i], points[i+1])). A span
// that is not cached is decompressed from its access point, fetching only the compressed bytes
// it needs through a BlobSource (normally the blob's UnixFS DAG in IPFS), then checked against
// the span's sha256 from the index before anyone sees it, and kept in the span cache: a sparse
// file of the uncompressed stream plus a map of present spans, persisted across restarts
// (data is fdatasync'ed before its map byte is written, so a crash never marks a span that is
// not on disk). Cached spans are served by a single pread. Concurrent reads of one missing span
// decompress it once. Plain (uncompressed) tar layers are read straight from the blob.
//
// The span cache can be dropped at any time (DropSpanCache, used by the snapshotter's global cap
// on span caches): later reads simply decompress again. A drop never makes a read return wrong
// bytes: preads of cached spans and writes of new spans hold a shared lock that the drop takes
// exclusively, and the drop clears the map (durably) before it punches the data out.
//
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/base/result.h"
#include "ipfs_fetch/block_source.h"
#include "ipfs_fetch/unixfs_reader.h"
#include "layer/layer_index.h"

namespace ipfly::layer {

// Compressed bytes of one blob.
class BlobSource {
 public:
  virtual ~BlobSource() = default;
  // Reads [offset, offset + out.size()); returns the count (short only at the end of the blob).
  virtual Result<size_t> ReadAt(uint64_t offset, MutableByteView out, fetch::Deadline dl) = 0;
};

// A blob stored in IPFS as a UnixFS file.
class UnixfsBlobSource : public BlobSource {
 public:
  UnixfsBlobSource(fetch::UnixfsReader* reader, mf::Cid cid)
      : reader_(reader), cid_(std::move(cid)) {}
  Result<size_t> ReadAt(uint64_t offset, MutableByteView out, fetch::Deadline dl) override {
    return reader_->ReadAt(cid_, offset, out, dl);
  }

 private:
  fetch::UnixfsReader* reader_;  // not owned
  mf::Cid cid_;
};

struct LayerReaderStats {
  uint64_t span_hits = 0;  // span reads served from the cache
  uint64_t spans_decompressed = 0;
  uint64_t compressed_bytes_read = 0;  // bytes asked of the BlobSource
  uint64_t span_compressed_bytes = 0;  // compressed size of the spans decompressed
  uint64_t spans_cached = 0;           // spans present now
  uint64_t spans_total = 0;
  uint64_t cached_bytes = 0;  // uncompressed bytes of the spans present now (disk cache only)
  uint64_t drops = 0;         // DropSpanCache calls that released something
};

struct LayerReaderOptions {
  // Directory of the persistent span cache; empty = memory only (a small LRU of spans).
  std::string cache_dir;
  // Base name of the cache files in cache_dir (<name>.data, <name>.map); empty =
  // SpanCacheName(index). Two LayerReaders must never have the same files open at once: each
  // keeps its own map of present spans, and a drop by one would punch data the other serves.
  std::string cache_name;
  size_t memory_spans = 8;  // spans kept in memory when there is no cache_dir
  // Called with the span's size after a span was added to the disk cache, from the reading
  // thread, with no lock of the reader held. Must be cheap and must not call back into the
  // reader (the snapshotter uses it to notice that the global span cache cap is exceeded).
  std::function<void(uint64_t bytes)> on_span_cached;
  // Tests only: runs between finding a span in the disk cache and reading it (to widen the
  // window a concurrent DropSpanCache must not slip into).
  std::function<void()> test_before_cached_pread;
};

// The default span cache name of a layer: its digest plus a tag of the index's span layout
// ("<digest-hex>-<16 hex>"), so indexes of one blob built with different spans never share a map.
std::string SpanCacheName(const LayerIndex& index);

class LayerReader {
 public:
  // `index` must describe the blob behind `blob`. kIo if the cache files cannot be opened.
  static Result<std::unique_ptr<LayerReader>> Open(std::shared_ptr<const LayerIndex> index,
                                                   std::unique_ptr<BlobSource> blob,
                                                   LayerReaderOptions options = {});
  ~LayerReader();

  // Reads [offset, offset + out.size()) of the uncompressed stream; short only at its end.
  // Errors: kCorrupt (bad compressed data or a span hash mismatch: never wrong bytes),
  // kTimeout/kUnavailable/kNotFound from the blob source, kIo from the span cache.
  Result<size_t> Read(uint64_t offset, MutableByteView out, fetch::Deadline deadline);

  // Zero-copy access to cached data: if every span of [offset, offset + len) of the
  // uncompressed stream is in the span cache file, calls fn(fd, offset) (the file holds the
  // stream at its own offsets) while holding the cache stable — no drop can punch the range
  // until fn returns — and returns fn's status. kNotFound, without calling fn, if any of it is
  // not cached (or the reader has no cache file). Never fetches; counts as span hits.
  Status WithCachedRange(uint64_t offset, uint64_t len,
                         const std::function<Status(int fd, uint64_t offset)>& fn);

  const LayerIndex& index() const;
  LayerReaderStats stats() const;

  // Uncompressed bytes of the spans in the disk cache now (the sum of their span sizes, which is
  // what the sparse data file holds, give or take filesystem block rounding). 0 without a disk
  // cache.
  uint64_t SpanCacheBytes() const;
  // When Read was last called (steady clock); the time of Open before any read.
  std::chrono::steady_clock::time_point LastAccess() const;

  // Releases the span cache: clears the map (on disk, synced) and then punches the data file out
  // (FALLOC_FL_PUNCH_HOLE; truncate + re-extend where punching is not supported). The reader
  // stays usable: reads after the drop decompress their spans again. Safe while reads run on
  // other threads: a read either completes its pread before the drop touches the data or finds
  // the span absent and fetches it again; a span being decompressed during the drop is written
  // and marked after it. Returns the bytes released (SpanCacheBytes() before the drop); 0 without
  // a disk cache (the memory LRU is cleared then). kIo if the map cannot be cleared (the data
  // is then left in place, the in-memory map is cleared: spans are fetched and rewritten).
  Result<uint64_t> DropSpanCache();

 private:
  struct Impl;
  explicit LayerReader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfly::layer
