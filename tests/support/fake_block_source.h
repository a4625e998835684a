// FakeBlockSource: an in-process, map-backed BlockSource with per-CID fault injection, for tests of
// the fetcher, the UnixFS reader and everything above them.
//
// Every block it returns goes through Block::Verify, also in the fault modes: kCorrupt hands the
// verifier tampered bytes, so callers see exactly the error a real source's verification makes.
//
// Faults (per CID, or the default for every CID that has none of its own):
//   kNotFound          Get → kNotFound
//   kCorrupt           Get → Block::Verify(cid, tampered bytes) → kCorrupt
//   kUnavailable       Get → kUnavailable (with an optional Retry-After hint), `times` times (0 =
//                      forever), then normal service
//   kTimeout           Get sleeps until the request deadline, then kTimeout
//   delay              added before any answer (bounded by the request deadline)
//   gate               Get waits until the gate is opened (EdenFS-style trigger), then proceeds
//
// StreamDag (off unless EnableStreaming): walks the UnixFS DAG under `root` depth-first, sending
// each block needed for the range once (like a gateway CAR with dups=n), optionally stopping after
// `truncate_after` blocks with kUnavailable (a CAR cut off mid-stream).
//
// Thread-safe. Counters let tests assert how often the source was asked.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "core/base/bytes.h"
#include "core/base/result.h"
#include "core/block.h"
#include "core/multiformats/cid.h"
#include "ipfs_fetch/block_source.h"

namespace ipfly::testing {

// A one-shot trigger: Wait() blocks until Open(); waiters() tells how many are blocked.
class Gate {
 public:
  void Open();
  bool is_open() const;
  // Returns true when opened, false at the deadline.
  bool Wait(fetch::Deadline deadline);
  int waiters() const;
  // Waits until at least `n` threads are blocked in Wait (or `timeout` passes).
  bool AwaitWaiters(int n, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool open_ = false;
  int waiters_ = 0;
};

struct Fault {
  enum class Kind { kNone, kNotFound, kCorrupt, kUnavailable, kTimeout };
  Kind kind = Kind::kNone;
  uint32_t times =
      0;  // kUnavailable/kCorrupt/kNotFound: fail this many times, then serve (0 = always)
  std::chrono::milliseconds delay{0};
  std::optional<std::chrono::milliseconds> retry_after;  // hint attached to kUnavailable
  std::shared_ptr<Gate> gate;

  static Fault NotFound() { return {Kind::kNotFound}; }
  static Fault Corrupt() { return {Kind::kCorrupt}; }
  static Fault Unavailable(uint32_t times = 0) { return {Kind::kUnavailable, times}; }
  static Fault Timeout() { return {Kind::kTimeout}; }
  static Fault Delay(std::chrono::milliseconds d) {
    Fault f;
    f.delay = d;
    return f;
  }
  static Fault Gated(std::shared_ptr<Gate> g) {
    Fault f;
    f.gate = std::move(g);
    return f;
  }
};

class FakeBlockSource : public fetch::BlockSource {
 public:
  explicit FakeBlockSource(std::string name = "fake");

  std::string name() const override { return name_; }
  Result<Block> Get(const mf::Cid& cid, fetch::Deadline deadline) override;
  Status StreamDag(const mf::Cid& root, fetch::EntityRange range, fetch::Deadline deadline,
                   const std::function<Status(const Block&)>& on_block) override;

  // Content. Blocks are keyed by CID exactly (a fake gateway knows CIDs, not multihashes).
  void Add(const Block& block);
  // Makes a CIDv1 block of `codec` from `data` and adds it.
  mf::Cid AddBytes(uint64_t codec, Bytes data);
  bool Contains(const mf::Cid& cid) const;
  size_t block_count() const;

  // Faults.
  void SetFault(const mf::Cid& cid, Fault fault);
  void ClearFault(const mf::Cid& cid);
  void SetDefaultFault(Fault fault);

  // Streaming.
  void EnableStreaming(bool on = true) { streaming_ = on; }
  // Stop each stream after this many blocks with kUnavailable (0 = never).
  void TruncateStreamsAfter(uint64_t blocks) { truncate_after_ = blocks; }
  // Streams wait at this gate (until their deadline) before sending anything: a stalled stream.
  void SetStreamGate(std::shared_ptr<Gate> gate);
  // Ignore the range and stream the whole DAG (a source that cannot do entity-bytes).
  void StreamWholeDag(bool on = true) { stream_whole_ = on; }

  // Counters.
  uint64_t gets() const { return gets_; }
  uint64_t gets_of(const mf::Cid& cid) const;
  uint64_t streams() const { return streams_; }
  uint64_t streamed_blocks() const { return streamed_blocks_; }
  // Highest number of Gets running at the same time.
  int max_concurrent_gets() const { return max_concurrent_; }
  void ResetCounters();

 private:
  Fault FaultFor(const mf::Cid& cid);

  const std::string name_;
  mutable std::mutex mu_;
  std::unordered_map<mf::Cid, Block> blocks_;
  std::unordered_map<mf::Cid, Fault> faults_;
  std::unordered_map<mf::Cid, uint32_t> fault_hits_;
  Fault default_fault_;
  std::shared_ptr<Gate> stream_gate_;
  std::unordered_map<mf::Cid, uint64_t> gets_by_cid_;
  std::atomic<bool> streaming_{false}, stream_whole_{false};
  std::atomic<uint64_t> truncate_after_{0};
  std::atomic<uint64_t> gets_{0}, streams_{0}, streamed_blocks_{0};
  std::atomic<int> concurrent_{0}, max_concurrent_{0};
};

}  // namespace ipfly::testing
