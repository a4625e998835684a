// Local block stores: FsBlockStore (on disk, content-addressed, optional LRU size cap) and
// MemoryBlockStore (in process, for tests and small uses).
//
// Both are keyed by MULTIHASH, not by CID: a CIDv0 and a CIDv1 of the same block, or a raw and a
// dag-pb CID with the same multihash, name the same bytes and are stored once. Get(cid) rebuilds
// the Block with the CID the caller asked for (through Block::Verify), so the returned Block
// always carries the requested CID.
//
// Identity CIDs hold their bytes inline: Put ignores them and Get answers them without any I/O.
#pragma once

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "core/base/result.h"
#include "core/block.h"
#include "core/multiformats/cid.h"
#include "core/multiformats/multihash.h"
#include "ipfs_fetch/block_source.h"

namespace ipfly::fetch {

struct FsBlockStoreOptions {
  // Size cap in bytes of block data (file sizes, not disk blocks). 0 = unlimited (the embedded
  // store); the fetch cache sets Config::cache_max_bytes. Over the cap, least-recently-used
  // blocks are deleted until the total is under the cap again.
  uint64_t max_bytes = 0;
  // fsync each block file (and its directory) before it becomes visible. Off by default: a block
  // is re-verified on every read, so a block torn by a power loss is detected, deleted and
  // fetched again; the rename keeps a crash from ever exposing a partial file under a block name.
  bool fsync = false;
  // Name used in logs and errors ("store", "cache"); defaults to "blockstore <dir>".
  std::string name;
};

// Counters; a snapshot, consistent enough for metrics (not a transaction).
struct BlockStoreStats {
  uint64_t bytes = 0;      // bytes of block data currently held
  uint64_t blocks = 0;     // blocks currently held
  uint64_t hits = 0;       // Get that returned a block
  uint64_t misses = 0;     // Get that returned kNotFound
  uint64_t puts = 0;       // Put that stored a new block
  uint64_t evictions = 0;  // blocks deleted to stay under the cap
  uint64_t corrupt = 0;    // blocks that failed re-verification on read (deleted)
};

// An on-disk block store:
//   <dir>/blocks/<shard>/<name>   name = base32 (RFC 4648 lower, no padding) of the multihash
//                                 bytes; shard = the two characters before the last one of name
//                                 (the last character only carries 2 bits), as Kubo's flatfs
//                                 "next-to-last/2" does: 1024 evenly used shard directories.
//   <dir>/tmp/<pid>.<n>.tmp       blocks being written; renamed into place when complete.
//
// Guarantees:
//   * Only verified Blocks can be Put (the Block type guarantees it), and Get re-verifies the
//     bytes read from disk: a mismatch (disk corruption, torn write after power loss, someone
//     editing the directory) deletes the file, logs, counts `corrupt` and returns kCorrupt so
//     that the caller (the Fetcher) fetches the block again.
//   * A block is written to an unnamed file (O_TMPFILE) in its shard directory and linked
//     under its name when complete (where O_TMPFILE is missing: <dir>/tmp + rename), so a block
//     name never shows a partial file. Stale tmp files (of processes that are gone, or older
//     than a day) are removed at Open; unnamed files vanish by themselves.
//   * <dir>/blocks carries ext4's top-directory flag (chattr +T), so shard directories and
//     their files spread over the file system's block groups (see MarkTopDir in the .cc).
//   * Restarts keep everything; the LRU order is rebuilt from file mtimes at Open, and Get
//     refreshes the mtime of a hit when a cap is set, so the order survives restarts.
//
// Several processes may share one directory (CLI and daemon): each keeps its own index and
// falls back to the file system when its index misses, so blocks written by others are found;
// the cap is then enforced per process and the byte counts are approximate.
//
// Thread-safe. The index is guarded by one mutex; block file reads, hashing and writes happen
// outside it. Errors: kNotFound (absent), kCorrupt (failed re-verification), kIo (file system).
class FsBlockStore : public BlockStore {
 public:
  // Creates <dir>, <dir>/blocks and <dir>/tmp as needed, removes stale tmp files, scans the
  // blocks and evicts down to the cap. kIo on file-system errors.
  static Result<std::unique_ptr<FsBlockStore>> Open(const std::string& dir,
                                                    FsBlockStoreOptions options = {});
  ~FsBlockStore() override;
  FsBlockStore(const FsBlockStore&) = delete;
  FsBlockStore& operator=(const FsBlockStore&) = delete;

  std::string name() const override { return name_; }
  // `deadline` is ignored: a local read does not block on the network.
  Result<Block> Get(const mf::Cid& cid, Deadline deadline) override;
  Status Put(const Block& block) override;
  Result<bool> Has(const mf::Cid& cid) override;
  // Deletes the block with this multihash if present (OK if absent).
  Status Delete(const mf::Multihash& mh);

  BlockStoreStats stats() const;
  const std::string& dir() const { return dir_; }
  uint64_t max_bytes() const { return options_.max_bytes; }

  // The path a block with this multihash is stored at (exposed for tests and `ipfly` tools).
  std::string BlockPath(const mf::Multihash& mh) const;

 private:
  struct Entry {
    uint64_t size = 0;
    std::list<std::string>::iterator lru;  // position in lru_ (front = most recently used)
  };

  FsBlockStore(std::string dir, FsBlockStoreOptions options);
  Status Init();
  Status CleanTmp();
  Status Scan();
  // Inserts or refreshes `key` in the index. Requires mu_.
  void IndexLocked(const std::string& key, uint64_t size);
  // IndexLocked if the block's file still exists (it was seen or written outside the lock).
  void AdoptLocked(const std::string& key, const std::string& path, uint64_t size);
  // Removes `key` from the index (not the file). Requires mu_.
  void UnindexLocked(const std::string& key);
  // Deletes least-recently-used blocks until bytes_ <= cap. Requires mu_.
  void EvictLocked();
  Status EnsureShardDir(const std::string& shard);
  Result<bool> PutTmpfile(const Block& block, const std::string& shard, const std::string& path);

  const std::string dir_;
  const FsBlockStoreOptions options_;
  const std::string name_;

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> index_;  // key: base32 name
  std::list<std::string> lru_;
  std::unordered_set<std::string> shards_made_;
  uint64_t bytes_ = 0;

  std::atomic<uint64_t> hits_{0}, misses_{0}, puts_{0}, evictions_{0}, corrupt_{0};
  std::atomic<uint64_t> tmp_counter_{0};
  std::atomic<bool> tmpfile_ok_{true};  // O_TMPFILE + linkat work here (else tmp + rename)
};

// An in-memory block store without a cap. Thread-safe.
class MemoryBlockStore : public BlockStore {
 public:
  explicit MemoryBlockStore(std::string name = "memory") : name_(std::move(name)) {}

  std::string name() const override { return name_; }
  Result<Block> Get(const mf::Cid& cid, Deadline deadline) override;
  Status Put(const Block& block) override;
  Result<bool> Has(const mf::Cid& cid) override;
  Status Delete(const mf::Multihash& mh);

  BlockStoreStats stats() const;

 private:
  const std::string name_;
  mutable std::mutex mu_;
  std::unordered_map<mf::Multihash, Block> blocks_;
  uint64_t bytes_ = 0;
  std::atomic<uint64_t> hits_{0}, misses_{0}, puts_{0};
};

// For identity CIDs: the Block holding the inline bytes. Requires cid.is_identity().
Result<Block> IdentityBlock(const mf::Cid& cid);

}  // namespace ipfly::fetch
