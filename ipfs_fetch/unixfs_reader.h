// UnixfsReader: byte-range reads of UnixFS files over a BlockSource (normally the Fetcher).
//
// A file is a DAG: raw-codec leaves (the block is the bytes), dag-pb File / legacy Raw nodes whose
// bytes are Data.Data followed by their children in link order. The reader seeks with the
// parent's `blocksizes` (never the link Tsize, which is only a hint) and counts inline Data.Data
// on internal nodes too (notes/ipfs.md A2, "Seeking to byte offset N").
//
// Validation while walking (errors name the root and the offending block):
//   kInvalidArgument  the root is not a file: Directory, Symlink, HAMTShard, Metadata, a dag-pb
//                     node without UnixFS data, or a codec other than raw / dag-pb ("not a file")
//   kCorrupt          "corrupt DAG ...": len(Links) != len(blocksizes); filesize !=
//                     len(Data.Data) + Σ blocksizes; a child whose size differs from the parent's
//                     blocksize; a non-empty Name on a chunk link; a non-file child; depth > 32;
//                     undecodable dag-pb / UnixFS
//   anything the BlockSource returns (kNotFound, kTimeout, kUnavailable, ...), with context
//
// Parallelism and memory:
//   ReadAt fetches the blocks of the range with up to `max_inflight` requests in flight;
//   Stream keeps a window of `readahead_blocks` blocks ahead of the output. Blocks are fetched on
//   a ThreadPool (owned, `max_inflight` threads, or injected). Peak memory of one call is about
//   window × block size × DAG depth (blocks pushed back by a node expansion stay in flight), plus
//   the stream staging cap — a few MiB to a few tens of MiB, independent of the range length.
//   Decoded internal nodes (and roots) are kept in a bounded LRU (node_cache_bytes), so repeated
//   reads of one file fetch only leaves.
//
// Stream with StreamDag: when the source can stream a DAG (gateway CAR with entity-bytes, Kubo
// dag/export), Stream asks for the range in one request on a helper thread and consumes the
// blocks as they arrive through a staging map bounded by stream_staging_bytes (the producer
// waits when it is full). If the stream ends, fails, is unsupported, skips a block (CAR dups=n),
// fills the staging map with blocks the walk does not need, or delivers nothing for
// stream_block_timeout_ms, the walk fetches what is still missing with per-block Get:
// completeness is checked by the DAG walk itself, never by the stream. A stream thread whose
// source has not reacted to cancellation yet when Stream returns is kept by the reader and joined
// once it ends (at the latest at the call's deadline, and always in the destructor).
//
// Thread safety: all methods may be called concurrently from any number of threads. The source
// (and an injected pool) must outlive the reader; an injected pool must not be the one the
// source itself uses for blocking work (pool-to-pool deadlocks).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/config.h"
#include "core/base/result.h"
#include "core/base/thread_pool.h"
#include "core/multiformats/cid.h"
#include "ipfs_fetch/block_source.h"

namespace ipfly::fetch {

namespace internal {
struct FileNode;  // a decoded UnixFS file node (unixfs_reader.cc)
}  // namespace internal

struct UnixfsReaderOptions {
  uint32_t max_inflight = 16;                   // ReadAt window; threads of the owned pool
  uint32_t readahead_blocks = 32;               // Stream window
  uint64_t node_cache_bytes = 16ull << 20;      // LRU of decoded internal nodes and roots
  uint64_t stream_staging_bytes = 16ull << 20;  // StreamDag blocks received but not yet used
  bool use_stream_dag = true;                   // let Stream try BlockSource::StreamDag first
  // Give up on a stream that delivers nothing for this long and fetch block by block instead
  // (FromConfig: FetchConfig::block_timeout_ms).
  uint32_t stream_block_timeout_ms = 20'000;
  ThreadPool* pool = nullptr;  // injected pool (not owned); null: the reader owns one

  static UnixfsReaderOptions FromConfig(const FetchConfig& config);
};

struct UnixfsReaderStats {
  uint64_t blocks_fetched = 0;   // blocks obtained with BlockSource::Get
  uint64_t blocks_streamed = 0;  // blocks obtained from a StreamDag
  uint64_t node_cache_hits = 0;
  uint64_t stream_fallbacks = 0;  // Streams whose StreamDag ended early or failed
};

class UnixfsReader {
 public:
  // `source` is not owned and must outlive the reader.
  UnixfsReader(BlockSource* source, UnixfsReaderOptions options = {});
  ~UnixfsReader();
  UnixfsReader(const UnixfsReader&) = delete;
  UnixfsReader& operator=(const UnixfsReader&) = delete;

  // File size (filesize of the root; the block length for a raw root).
  Result<uint64_t> Size(const mf::Cid& root, Deadline deadline);

  // Reads [offset, offset + out.size()) into `out`; returns the number of bytes read, which is
  // short only at end of file (0 at or past EOF). The root is validated even for an empty read.
  Result<size_t> ReadAt(const mf::Cid& root, uint64_t offset, MutableByteView out,
                        Deadline deadline);

  // Calls `sink` with the bytes of [offset, offset + length) in order (length is clamped to the
  // file; UINT64_MAX = to the end). Views passed to `sink` are valid only during the call. An
  // error from `sink` stops the stream and is returned.
  Status Stream(const mf::Cid& root, uint64_t offset, uint64_t length,
                const std::function<Status(ByteView)>& sink, Deadline deadline);

  UnixfsReaderStats stats() const;

 private:
  struct Item;
  class StreamFeed;
  using NodePtr = std::shared_ptr<const internal::FileNode>;

  Status Walk(const mf::Cid& root, uint64_t offset, uint64_t length, size_t window,
              StreamFeed* feed, const std::function<Status(ByteView)>& sink, Deadline deadline);
  Result<NodePtr> ResolveRoot(const mf::Cid& root, Deadline deadline);
  NodePtr CacheLookup(const mf::Cid& cid);
  // Joins lingering stream threads that have ended (all of them when `all`).
  void ReapFeeds(bool all);
  void CacheInsert(const mf::Cid& cid, const NodePtr& node);

  BlockSource* const source_;
  const UnixfsReaderOptions options_;

  mutable std::mutex cache_mu_;
  std::list<std::pair<mf::Cid, NodePtr>> lru_;  // front = most recent
  std::unordered_map<mf::Cid, std::list<std::pair<mf::Cid, NodePtr>>::iterator> cache_index_;
  uint64_t cache_bytes_ = 0;

  // Streams whose source had not stopped when their Stream call returned; joined when they end
  // (checked at each Stream) and at destruction.
  std::mutex feeds_mu_;
  std::vector<std::unique_ptr<StreamFeed>> lingering_;

  std::atomic<uint64_t> blocks_fetched_{0}, blocks_streamed_{0}, node_cache_hits_{0},
      stream_fallbacks_{0};

  // Last member: destroyed (joined) first, while everything its tasks touch is still alive.
  std::unique_ptr<ThreadPool> owned_pool_;
  ThreadPool* pool_;
};

}  // namespace ipfly::fetch
