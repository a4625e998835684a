#include "tests/support/fake_block_source.h"

#include <algorithm>
#include <thread>
#include <unordered_set>

#include "core/codec/dagpb.h"
#include "core/codec/unixfs_pb.h"
#include "ipfs_fetch/retry_hint.h"

namespace ipfly::testing {

void Gate::Open() {
  std::lock_guard lk(mu_);
  open_ = true;
  cv_.notify_all();
}

bool Gate::is_open() const {
  std::lock_guard lk(mu_);
  return open_;
}

bool Gate::Wait(fetch::Deadline deadline) {
  std::unique_lock lk(mu_);
  ++waiters_;
  cv_.notify_all();
  bool ok = cv_.wait_until(lk, deadline, [&] { return open_; });
  --waiters_;
  return ok;
}

int Gate::waiters() const {
  std::lock_guard lk(mu_);
  return waiters_;
}

bool Gate::AwaitWaiters(int n, std::chrono::milliseconds timeout) {
  std::unique_lock lk(mu_);
  return cv_.wait_for(lk, timeout, [&] { return waiters_ >= n; });
}

FakeBlockSource::FakeBlockSource(std::string name) : name_(std::move(name)) {}

void FakeBlockSource::Add(const Block& block) {
  std::lock_guard lk(mu_);
  blocks_.insert_or_assign(block.cid(), block);
}

mf::Cid FakeBlockSource::AddBytes(uint64_t codec, Bytes data) {
  Block b = Block::Make(codec, std::move(data)).value();
  Add(b);
  return b.cid();
}

bool FakeBlockSource::Contains(const mf::Cid& cid) const {
  std::lock_guard lk(mu_);
  return blocks_.count(cid) != 0;
}

size_t FakeBlockSource::block_count() const {
  std::lock_guard lk(mu_);
  return blocks_.size();
}

void FakeBlockSource::SetFault(const mf::Cid& cid, Fault fault) {
  std::lock_guard lk(mu_);
  faults_.insert_or_assign(cid, std::move(fault));
  fault_hits_.erase(cid);
}

void FakeBlockSource::ClearFault(const mf::Cid& cid) {
  std::lock_guard lk(mu_);
  faults_.erase(cid);
}

void FakeBlockSource::SetDefaultFault(Fault fault) {
  std::lock_guard lk(mu_);
  default_fault_ = std::move(fault);
  fault_hits_.clear();
}

void FakeBlockSource::SetStreamGate(std::shared_ptr<Gate> gate) {
  std::lock_guard lk(mu_);
  stream_gate_ = std::move(gate);
}

uint64_t FakeBlockSource::gets_of(const mf::Cid& cid) const {
  std::lock_guard lk(mu_);
  auto it = gets_by_cid_.find(cid);
  return it == gets_by_cid_.end() ? 0 : it->second;
}

void FakeBlockSource::ResetCounters() {
  std::lock_guard lk(mu_);
  gets_by_cid_.clear();
  gets_ = 0;
  streams_ = 0;
  streamed_blocks_ = 0;
  max_concurrent_ = 0;
}

// Returns the fault to apply to this request; counts hits so that "fail N times" runs out.
Fault FakeBlockSource::FaultFor(const mf::Cid& cid) {
  std::lock_guard lk(mu_);
  auto it = faults_.find(cid);
  Fault f = it != faults_.end() ? it->second : default_fault_;
  if (f.kind != Fault::Kind::kNone && f.times > 0) {
    uint32_t& hits = fault_hits_[cid];
    if (hits >= f.times) {
      f.kind = Fault::Kind::kNone;
    } else {
      ++hits;
    }
  }
  return f;
}

Result<Block> FakeBlockSource::Get(const mf::Cid& cid, fetch::Deadline deadline) {
  ++gets_;
  {
    std::lock_guard lk(mu_);
    ++gets_by_cid_[cid];
  }
  int now_running = ++concurrent_;
  int prev = max_concurrent_.load();
  while (prev < now_running && !max_concurrent_.compare_exchange_weak(prev, now_running)) {
  }
  struct Leave {
    std::atomic<int>* c;
    ~Leave() { --*c; }
  } leave{&concurrent_};

  Fault f = FaultFor(cid);
  if (f.gate && !f.gate->Wait(deadline)) {
    return Timeout(name_ + ": deadline passed at the gate for " + cid.ToString());
  }
  if (f.delay.count() > 0) {
    auto until = std::min(deadline, fetch::Clock::now() + f.delay);
    std::this_thread::sleep_until(until);
    if (fetch::Clock::now() >= deadline) {
      return Timeout(name_ + ": deadline passed (delayed) for " + cid.ToString());
    }
  }
  switch (f.kind) {
    case Fault::Kind::kNone:
      break;
    case Fault::Kind::kNotFound:
      return NotFound(name_ + ": injected not found for " + cid.ToString());
    case Fault::Kind::kUnavailable: {
      Error e = Unavailable(name_ + ": injected 503 for " + cid.ToString());
      if (f.retry_after) return fetch::WithRetryAfter(std::move(e), *f.retry_after);
      return e;
    }
    case Fault::Kind::kTimeout:
      std::this_thread::sleep_until(deadline);
      return Timeout(name_ + ": request for " + cid.ToString() + " timed out");
    case Fault::Kind::kCorrupt: {
      Bytes data;
      {
        std::lock_guard lk(mu_);
        auto it = blocks_.find(cid);
        if (it != blocks_.end()) data.assign(it->second.data().begin(), it->second.data().end());
      }
      data.push_back(0x42);  // any change will do: the verifier must reject it
      if (!data.empty()) data[0] ^= 0xff;
      return Block::Verify(cid, std::move(data));
    }
  }
  Bytes data;
  {
    std::lock_guard lk(mu_);
    auto it = blocks_.find(cid);
    if (it == blocks_.end()) return NotFound(name_ + " does not have " + cid.ToString());
    // Copy, as a network source would hand over fresh bytes.
    data.assign(it->second.data().begin(), it->second.data().end());
  }
  return Block::Verify(cid, std::move(data));
}

Status FakeBlockSource::StreamDag(const mf::Cid& root, fetch::EntityRange range,
                                  fetch::Deadline deadline,
                                  const std::function<Status(const Block&)>& on_block) {
  if (!streaming_) return BlockSource::StreamDag(root, range, deadline, on_block);
  ++streams_;
  std::shared_ptr<Gate> gate;
  {
    std::lock_guard lk(mu_);
    gate = stream_gate_;
  }
  if (gate && !gate->Wait(deadline)) return Timeout(name_ + ": stream stalled until the deadline");
  uint64_t sent = 0;
  std::unordered_set<mf::Cid> seen;
  uint64_t from = stream_whole_ ? 0 : range.from;
  uint64_t to = stream_whole_ ? fetch::EntityRange::kToEnd : range.to;
  // Depth-first, each block once (dups=n). `seen` lives in the lambda-captured set.
  std::function<Status(const mf::Cid&, uint64_t, uint64_t)> walk =
      [&](const mf::Cid& cid, uint64_t lo, uint64_t hi) -> Status {
    if (fetch::Clock::now() >= deadline) return Timeout(name_ + ": stream deadline passed");
    std::optional<Block> b;
    {
      std::lock_guard lk(mu_);
      auto it = blocks_.find(cid);
      if (it == blocks_.end()) return NotFound(name_ + " does not have " + cid.ToString());
      b = it->second;
    }
    if (truncate_after_ > 0 && sent >= truncate_after_) {
      return Unavailable(name_ + ": stream cut off after " + std::to_string(sent) + " blocks");
    }
    if (seen.insert(cid).second) {
      // Fresh copy through the verifier, like a CAR parser would do.
      auto fresh = Block::Verify(cid, Bytes(b->data().begin(), b->data().end()));
      if (!fresh.ok()) return std::move(fresh).error();
      ++sent;
      ++streamed_blocks_;
      IPFLY_RETURN_IF_ERROR(on_block(*fresh));
    }
    if (cid.codec() != mf::kCodecDagPb) return OkStatus();
    auto pb = codec::DecodeDagPb(b->data());
    if (!pb.ok() || !pb->data) return OkStatus();
    auto fs = codec::DecodeUnixfs(*pb->data);
    if (!fs.ok() || fs->blocksizes.size() != pb->links.size()) return OkStatus();
    uint64_t pos = fs->data ? fs->data->size() : 0;
    for (size_t i = 0; i < pb->links.size(); ++i) {
      uint64_t cs = pos, ce = pos + fs->blocksizes[i];
      pos = ce;
      if (ce == cs || ce <= lo || cs > hi) continue;
      uint64_t clo = lo > cs ? lo - cs : 0;
      uint64_t chi = std::min(hi, ce - 1) - cs;
      IPFLY_RETURN_IF_ERROR(walk(pb->links[i].hash, clo, chi));
    }
    return OkStatus();
  };
  return walk(root, from, to);
}

}  // namespace ipfly::testing
