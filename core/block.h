// Block: bytes proven to hash to their CID. The only way to make one is Block::Verify (or
// Block::Make, which computes the CID), so a Block anywhere in the tree is verified content.
//
// Copies share the immutable byte buffer (shared_ptr); a Block is thread-safe to read.
#pragma once

#include <memory>

#include "core/base/bytes.h"
#include "core/base/result.h"
#include "core/multiformats/cid.h"

namespace ipfly {

// Blocks above this size are refused everywhere (trustless gateway spec: SHOULD refuse > 2 MiB).
inline constexpr size_t kMaxBlockSize = 2 * 1024 * 1024;

class Block {
 public:
  // Verifies `data` against `cid`'s multihash. kCorrupt on mismatch (message names the CID and
  // both digests), kTooLarge above kMaxBlockSize, kUnsupported for unknown hash functions.
  static Result<Block> Verify(const mf::Cid& cid, Bytes data);
  // Computes the sha2-256 CIDv1 (or v0 when version == 0 and codec is dag-pb) of `data`.
  static Result<Block> Make(uint64_t codec, Bytes data, int version = 1);

  const mf::Cid& cid() const { return cid_; }
  ByteView data() const { return ByteView(data_->data(), data_->size()); }
  size_t size() const { return data_->size(); }
  std::shared_ptr<const Bytes> shared_data() const { return data_; }

 private:
  Block(mf::Cid cid, std::shared_ptr<const Bytes> data)
      : cid_(std::move(cid)), data_(std::move(data)) {}
  mf::Cid cid_;
  std::shared_ptr<const Bytes> data_;
};

// Something blocks can be written into (embedded store, CAR writer, Kubo uploader, counters).
// Implementations must be thread-safe if shared between threads.
class BlockSink {
 public:
  virtual ~BlockSink() = default;
  virtual Status Put(const Block& block) = 0;
};

}  // namespace ipfly
