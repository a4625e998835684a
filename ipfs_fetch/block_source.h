// Block sources: where verified blocks come from (embedded store, disk cache, trustless gateways,
// Kubo RPC, Powergate as the cold fallback). Every implementation returns ipfly::Block, which can
// only be built by verifying bytes against the CID, so unverified bytes never leave a source.
//
// Error contract for Get/Stream (callers rely on it to decide what to do next):
//   kNotFound     this source does not have the block: try the next source, do not retry
//   kCorrupt      the source sent bytes that failed verification: log, try the next source
//   kUnavailable  transient (connection refused/reset, 429, 5xx): retry with backoff, then next
//   kTimeout      the deadline passed
//   kTooLarge     block over 2 MiB
// All sources are thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "core/base/result.h"
#include "core/block.h"
#include "core/multiformats/cid.h"

namespace ipfly::fetch {

using Clock = std::chrono::steady_clock;
using Deadline = Clock::time_point;

inline Deadline DeadlineIn(std::chrono::milliseconds d) { return Clock::now() + d; }

// A byte range of a UnixFS file entity: [from, to], inclusive like the gateway's entity-bytes;
// to == kToEnd means "to the end of the file".
struct EntityRange {
  static constexpr uint64_t kToEnd = UINT64_MAX;
  uint64_t from = 0;
  uint64_t to = kToEnd;
  bool whole() const { return from == 0 && to == kToEnd; }
};

class BlockSource {
 public:
  virtual ~BlockSource() = default;

  // Human-readable name used in logs and errors, e.g. "gateway http://127.0.0.1:8080".
  virtual std::string name() const = 0;

  // Fetches and verifies one block. See the error contract above.
  virtual Result<Block> Get(const mf::Cid& cid, Deadline deadline) = 0;

  // Streams the blocks needed to read `range` of the UnixFS file at `root`, in DFS order, each
  // verified before `on_block` sees it. Used to get many blocks in one request (gateway CAR with
  // entity-bytes, Kubo dag/export for whole files). The stream may end early (truncated CAR):
  // callers must check completeness themselves and fetch what is missing with Get.
  // Returns kUnsupported if the source cannot stream (the default).
  virtual Status StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                           const std::function<Status(const Block&)>& on_block) {
    (void)root, (void)range, (void)deadline, (void)on_block;
    return Unsupported(name() + " cannot stream DAGs");
  }

  // Extra Prometheus text lines of this source (gauges and counters of its own, e.g. the cold
  // Powergate source's thaw jobs). The Fetcher appends them to its MetricsText. Default: none.
  virtual std::string ExtraMetricsText() const { return {}; }
};

// The root object of the read running on this thread: the UnixFS file (layer blob, layer
// index) whose blocks are being fetched. Sources that work on whole objects (Powergate, which
// can only thaw and stream complete objects) need it, since a block CID alone does not say which
// object it belongs to. UnixfsReader sets it for every Get it makes (on its own thread and on
// its pool threads); a Get without a scope is treated as a read of the block's own object.
// Thread-local and nestable (the innermost scope wins); no locking involved. The Fetcher calls
// its sources on the caller's thread, so the leader of a collapsed flight answers for every
// waiter with its own root; a wrong guess can only make a cold source miss (every block is still
// verified against its CID).
class ReadRootScope {
 public:
  explicit ReadRootScope(const mf::Cid& root) : prev_(current_), root_(root) { current_ = &root_; }
  ~ReadRootScope() { current_ = prev_; }
  ReadRootScope(const ReadRootScope&) = delete;
  ReadRootScope& operator=(const ReadRootScope&) = delete;

  // The innermost root on this thread, or null.
  static const mf::Cid* Current() { return current_; }

 private:
  static inline thread_local const mf::Cid* current_ = nullptr;
  const mf::Cid* prev_;
  mf::Cid root_;
};

// A local, writable set of blocks (embedded store, disk cache).
class BlockStore : public BlockSource, public BlockSink {
 public:
  virtual Result<bool> Has(const mf::Cid& cid) = 0;
};

}  // namespace ipfly::fetch
