// Fetcher: the composition root of block retrieval. One Fetcher per process serves every reader
// (FUSE, CLI `cat`/`get`, registry shim).
//
//   Get(cid):  identity CID → answered inline, no I/O
//              embedded store (blocks the user added)        ─┐ local, no network
//              disk cache (blocks fetched earlier)           ─┘
//              remote sources in configured order (gateways, Kubo RPC, later Powergate last)
//              → a fetched block is written to the cache, then returned
//
// Per-source error handling (block_source.h contract):
//   kNotFound                  → next source, no retry
//   kCorrupt                   → logged, next source; corrupt bytes never reach the cache (a
//                                Block cannot even hold them)
//   kUnavailable / kTimeout    → retried on the same source up to FetchConfig::retries times with
//                                exponential backoff (retry_backoff_ms, doubling, "equal jitter":
//                                uniform in [d/2, d]); a Retry-After hint (retry_hint.h) raises
//                                the wait; a wait that would cross the deadline moves on to the
//                                next source instead
//   anything else (kTooLarge, kPermissionDenied, ...) → logged, next source
// Each request to a source gets min(call deadline, now + block_timeout_ms).
//
// Deadlines: Get never runs past its deadline (beyond one in-progress source call, which is given
// that same deadline). When it passes, the result is kTimeout with a message naming the CID, the
// time spent, and each source with its last error ("not tried" for those never reached).
// When every source says kNotFound the result is kNotFound listing them; otherwise the most
// telling failure (kUnavailable if any source was unreachable, else kCorrupt, else the first).
//
// Collapsing: concurrent Gets of the same CID share one fetch. The first caller fetches; the
// others wait for its result, each until its own deadline (a waiter that gives up does not
// disturb the fetch). If the fetching caller's deadline was earlier and it timed out, a waiter
// with time left fetches again itself.
//
// Hedging (FetchConfig::hedge_ms) is done inside MultiGatewaySource, which MakeFetcher uses for
// runs of consecutive gateways when hedging is on; the Fetcher itself asks one source at a time.
//
// Thread safety: all methods are thread-safe. The Fetcher never starts threads of its own; a Get
// runs on the caller's thread (waiters block on a condition variable).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/base/config.h"
#include "core/base/result.h"
#include "core/block.h"
#include "core/multiformats/cid.h"
#include "ipfs_fetch/block_source.h"

namespace ipfly::fetch {

struct FetcherOptions {
  FetchConfig config;
  // Embedded store: blocks the user imported. Read only by the Fetcher. May be null.
  BlockStore* store = nullptr;
  // Disk cache: every block fetched from a remote source is written here. May be null.
  BlockStore* cache = nullptr;
  // Remote sources, tried in this order.
  std::vector<BlockSource*> sources;
  // Objects the Fetcher owns (any of store/cache/sources above may point into them). They are
  // destroyed with the Fetcher, in reverse order. Pointers not listed here are borrowed and must
  // outlive the Fetcher.
  std::vector<std::unique_ptr<BlockSource>> owned;
};

struct SourceStats {
  std::string name;
  uint64_t requests = 0;  // Get calls made to the source (retries included)
  uint64_t blocks = 0;    // blocks it delivered through Get
  uint64_t bytes = 0;     // bytes of those blocks
  uint64_t retries = 0;   // backoff waits taken before asking again
  uint64_t not_found = 0;
  uint64_t corrupt = 0;
  uint64_t unavailable = 0;
  uint64_t timeouts = 0;
  uint64_t other_errors = 0;
  uint64_t streams = 0;        // StreamDag calls that the source accepted (not kUnsupported)
  uint64_t stream_blocks = 0;  // blocks delivered through StreamDag
  uint64_t stream_bytes = 0;
};

struct FetcherStats {
  uint64_t gets = 0;      // Get calls
  uint64_t identity = 0;  // answered inline
  uint64_t store_hits = 0;
  uint64_t cache_hits = 0;
  uint64_t collapsed = 0;  // Gets that waited on another caller's fetch
  uint64_t fetched = 0;    // blocks fetched from remote sources
  uint64_t fetched_bytes = 0;
  uint64_t local_corrupt = 0;  // store/cache copies that failed verification
  uint64_t cache_put_errors = 0;
  // Gets that failed, by final error kind.
  uint64_t failed_not_found = 0;
  uint64_t failed_timeout = 0;
  uint64_t failed_unavailable = 0;
  uint64_t failed_corrupt = 0;
  uint64_t failed_other = 0;
  std::vector<SourceStats> sources;  // in configured order
};

class Fetcher : public BlockSource {
 public:
  explicit Fetcher(FetcherOptions options);
  ~Fetcher() override;
  Fetcher(const Fetcher&) = delete;
  Fetcher& operator=(const Fetcher&) = delete;

  std::string name() const override { return "fetcher"; }

  // See the class comment. On success the Block carries exactly `cid`.
  Result<Block> Get(const mf::Cid& cid, Deadline deadline) override;

  // Asks the remote sources, in order, to stream the blocks for `range` of `root`; every block is
  // written to the cache and then passed to `on_block`. A source answering kUnsupported, or
  // failing before it delivered anything, is skipped for the next one; once blocks have flowed, a
  // failure is returned as is (the caller completes the DAG with Get). Returns kUnsupported when
  // no source can stream, and also when `root` is already local (store or cache): the DAG is then
  // most likely local too, and per-block Gets from disk beat a network stream.
  Status StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                   const std::function<Status(const Block&)>& on_block) override;

  // Waits until every fetched block queued for the cache has been written to it.
  void FlushCache();

  // Store, then cache; no network. kNotFound if neither holds the block.
  Result<Block> GetLocal(const mf::Cid& cid);
  // True if the store or the cache holds the block (identity CIDs: always).
  bool HasLocal(const mf::Cid& cid);

  const FetchConfig& config() const { return config_; }
  BlockStore* store() const { return store_; }
  BlockStore* cache() const { return cache_; }

  FetcherStats stats() const;
  // Prometheus text exposition of stats() (ipfly_fetch_* families; sources labelled by name),
  // followed by SourceMetricsText().
  std::string MetricsText() const;
  // The sources' own metrics (BlockSource::ExtraMetricsText, e.g. ipfly_powergate_*).
  std::string SourceMetricsText() const;

 private:
  struct Flight;
  struct SourceCounters;

  Result<Block> FetchFromSources(const mf::Cid& cid, Deadline deadline);
  bool DagLikelyLocal(const mf::Cid& root);
  void CachePut(const Block& b);
  void WriterLoop();
  std::optional<Block> LookupPending(const mf::Cid& cid);
  // Store then cache, counting hits. nullopt on miss (errors are logged and count as misses).
  std::optional<Block> LookupLocal(const mf::Cid& cid, bool cache_only);
  void CountFailure(const Error& e);
  std::chrono::milliseconds Backoff(uint32_t attempt);

  const FetchConfig config_;
  std::vector<std::unique_ptr<BlockSource>> owned_;  // destroyed last
  BlockStore* const store_;
  BlockStore* const cache_;
  const std::vector<BlockSource*> sources_;
  std::vector<std::unique_ptr<SourceCounters>> counters_;  // parallel to sources_

  static constexpr uint64_t kMaxPendingBytes = 32ull << 20;
  std::mutex wmu_;
  std::condition_variable wcv_, wspace_;
  std::deque<Block> wqueue_;
  std::unordered_map<mf::Multihash, Block> pending_;
  uint64_t pending_bytes_ = 0;
  bool wstop_ = false;
  // Cache writers, declared after everything they use; joined in the destructor.
  static constexpr int kWriterThreads = 2;
  std::vector<std::thread> writers_;

  std::mutex flights_mu_;
  std::unordered_map<mf::Cid, std::shared_ptr<Flight>> flights_;

  std::atomic<uint64_t> gets_{0}, identity_{0}, store_hits_{0}, cache_hits_{0}, collapsed_{0},
      fetched_{0}, fetched_bytes_{0}, local_corrupt_{0}, cache_put_errors_{0};
  std::atomic<uint64_t> failed_not_found_{0}, failed_timeout_{0}, failed_unavailable_{0},
      failed_corrupt_{0}, failed_other_{0};
};

}  // namespace ipfly::fetch
