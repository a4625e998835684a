#include "ipfs_fetch/fetcher.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <utility>

#include "core/base/log.h"
#include "core/codec/dagpb.h"
#include "ipfs_fetch/fs_block_store.h"
#include "ipfs_fetch/retry_hint.h"

namespace ipfly::fetch {
namespace {

using std::chrono::milliseconds;

// Upper bound of one backoff wait, whatever the attempt number.
constexpr milliseconds kMaxBackoff{10'000};

int64_t MsSince(Clock::time_point start) {
  return std::chrono::duration_cast<milliseconds>(Clock::now() - start).count();
}

std::string CodeText(Errc c) { return std::string(ErrcName(c)); }

// A source that fails the same object the same way (e.g. Powergate with thaws disabled:
// kFailedPrecondition) fails every read of it, one FUSE read after the other. Its WARN line is
// logged the first time for a (read root or CID, source, error kind), then at most once per
// kFailureWarnInterval with the number of lines suppressed in between.
constexpr std::chrono::seconds kFailureWarnInterval{60};
constexpr size_t kFailureWarnMaxKeys = 4096;

class FailureWarnLimiter {
 public:
  // True if the caller logs now; `suppressed` = occurrences not logged since the last line.
  bool Allow(const std::string& key, uint64_t* suppressed) {
    const auto now = Clock::now();
    std::lock_guard lock(mu_);
    if (entries_.size() >= kFailureWarnMaxKeys && !entries_.count(key)) {
      std::erase_if(entries_,
                    [&](const auto& e) { return now - e.second.last >= kFailureWarnInterval; });
      if (entries_.size() >= kFailureWarnMaxKeys) entries_.clear();
    }
    auto [it, fresh] = entries_.try_emplace(key);
    if (fresh || now - it->second.last >= kFailureWarnInterval) {
      *suppressed = it->second.suppressed;
      it->second = {now, 0};
      return true;
    }
    ++it->second.suppressed;
    return false;
  }

 private:
  struct Entry {
    Clock::time_point last;
    uint64_t suppressed = 0;
  };
  std::mutex mu_;
  std::unordered_map<std::string, Entry> entries_;
};

FailureWarnLimiter& FailureWarns() {
  static FailureWarnLimiter limiter;
  return limiter;
}

}  // namespace

struct Fetcher::Flight {
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  std::optional<Result<Block>> result;
};

struct Fetcher::SourceCounters {
  std::atomic<uint64_t> requests{0}, blocks{0}, bytes{0}, retries{0}, not_found{0}, corrupt{0},
      unavailable{0}, timeouts{0}, other_errors{0}, streams{0}, stream_blocks{0}, stream_bytes{0};
};

Fetcher::Fetcher(FetcherOptions options)
    : config_(options.config),
      owned_(std::move(options.owned)),
      store_(options.store),
      cache_(options.cache),
      sources_(std::move(options.sources)) {
  for (size_t i = 0; i < sources_.size(); ++i) {
    counters_.push_back(std::make_unique<SourceCounters>());
  }
  if (cache_) {
    for (int i = 0; i < kWriterThreads; ++i) writers_.emplace_back([this] { WriterLoop(); });
  }
}

Fetcher::~Fetcher() {
  if (!writers_.empty()) {
    {
      std::lock_guard lk(wmu_);
      wstop_ = true;
    }
    wcv_.notify_all();
    for (auto& w : writers_) w.join();  // they drain the queue first
  }
}

// Cache writes happen on one writer thread so that disk writes overlap with the network and the
// consumer; the queue is bounded (kMaxPendingBytes) so a slow disk slows fetching down instead
// of growing memory. Blocks waiting in the queue are found by LookupLocal.
void Fetcher::CachePut(const Block& b) {
  std::unique_lock lk(wmu_);
  wspace_.wait(lk, [&] { return wstop_ || pending_bytes_ < kMaxPendingBytes; });
  if (wstop_) {
    lk.unlock();
    if (!cache_->Put(b).ok()) cache_put_errors_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  if (!pending_.emplace(b.cid().multihash(), b).second) return;  // already queued
  pending_bytes_ += b.size();
  wqueue_.push_back(b);
  wcv_.notify_one();
}

void Fetcher::FlushCache() {
  std::unique_lock lk(wmu_);
  wspace_.wait(lk, [&] { return pending_bytes_ == 0 && wqueue_.empty(); });
}

void Fetcher::WriterLoop() {
  std::unique_lock lk(wmu_);
  for (;;) {
    wcv_.wait(lk, [&] { return wstop_ || !wqueue_.empty(); });
    if (wqueue_.empty()) return;  // stopping and drained
    Block b = std::move(wqueue_.front());
    wqueue_.pop_front();
    lk.unlock();
    Status st = cache_->Put(b);
    if (!st.ok()) {
      cache_put_errors_.fetch_add(1, std::memory_order_relaxed);
      IPFLY_LOG_WARN("fetcher: caching {} failed: {}", b.cid().ToString(), st.error().ToString());
    }
    lk.lock();
    pending_.erase(b.cid().multihash());
    pending_bytes_ -= b.size();
    wspace_.notify_all();
  }
}

std::optional<Block> Fetcher::LookupPending(const mf::Cid& cid) {
  std::optional<Block> found;
  {
    std::lock_guard lk(wmu_);
    auto it = pending_.find(cid.multihash());
    if (it == pending_.end()) return std::nullopt;
    found = it->second;
  }
  if (found->cid() == cid) return found;
  // Same bytes under another CID (v0/v1, raw/dag-pb): re-verify to build the requested Block.
  auto b = Block::Verify(cid, Bytes(found->data().begin(), found->data().end()));
  if (!b.ok()) return std::nullopt;
  return std::move(*b);
}

std::optional<Block> Fetcher::LookupLocal(const mf::Cid& cid, bool cache_only) {
  if (cache_) {
    if (auto p = LookupPending(cid)) {
      cache_hits_.fetch_add(1, std::memory_order_relaxed);
      return p;
    }
  }
  BlockStore* layers[2] = {cache_only ? nullptr : store_, cache_};
  for (int i = 0; i < 2; ++i) {
    BlockStore* s = layers[i];
    if (!s) continue;
    auto r = s->Get(cid, Deadline::max());
    if (r.ok()) {
      (i == 0 ? store_hits_ : cache_hits_).fetch_add(1, std::memory_order_relaxed);
      return std::move(r).value();
    }
    const Error& e = r.error();
    if (e.code() == Errc::kNotFound) continue;
    // A corrupt local copy was already deleted (and logged) by the store; fetching replaces it.
    if (e.code() == Errc::kCorrupt) {
      local_corrupt_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    IPFLY_LOG_WARN("fetcher: {} lookup of {} failed, treating as a miss: {}", s->name(),
                   cid.ToString(), e.ToString());
  }
  return std::nullopt;
}

Result<Block> Fetcher::GetLocal(const mf::Cid& cid) {
  if (cid.is_identity()) return IdentityBlock(cid);
  auto b = LookupLocal(cid, /*cache_only=*/false);
  if (b) return std::move(*b);
  return NotFound("block " + cid.ToString() + " is not in the local store or cache");
}

bool Fetcher::HasLocal(const mf::Cid& cid) {
  if (cid.is_identity()) return true;
  for (BlockStore* s : {store_, cache_}) {
    if (!s) continue;
    auto r = s->Has(cid);
    if (r.ok() && *r) return true;
  }
  return false;
}

void Fetcher::CountFailure(const Error& e) {
  switch (e.code()) {
    case Errc::kNotFound:
      failed_not_found_.fetch_add(1, std::memory_order_relaxed);
      break;
    case Errc::kTimeout:
      failed_timeout_.fetch_add(1, std::memory_order_relaxed);
      break;
    case Errc::kUnavailable:
      failed_unavailable_.fetch_add(1, std::memory_order_relaxed);
      break;
    case Errc::kCorrupt:
      failed_corrupt_.fetch_add(1, std::memory_order_relaxed);
      break;
    default:
      failed_other_.fetch_add(1, std::memory_order_relaxed);
      break;
  }
}

Result<Block> Fetcher::Get(const mf::Cid& cid, Deadline deadline) {
  gets_.fetch_add(1, std::memory_order_relaxed);
  if (cid.is_identity()) {
    identity_.fetch_add(1, std::memory_order_relaxed);
    return IdentityBlock(cid);
  }
  if (auto b = LookupLocal(cid, /*cache_only=*/false)) return std::move(*b);

  const auto start = Clock::now();
  for (;;) {
    std::shared_ptr<Flight> flight;
    bool leader = false;
    {
      std::lock_guard lk(flights_mu_);
      auto [it, inserted] = flights_.try_emplace(cid);
      if (inserted) it->second = std::make_shared<Flight>();
      flight = it->second;
      leader = inserted;
    }

    if (!leader) {
      collapsed_.fetch_add(1, std::memory_order_relaxed);
      std::unique_lock lk(flight->mu);
      if (!flight->cv.wait_until(lk, deadline, [&] { return flight->done; })) {
        Error e = Timeout("block " + cid.ToString() + ": deadline passed after " +
                          std::to_string(MsSince(start)) +
                          " ms waiting for another reader's fetch of the same block");
        CountFailure(e);
        return e;
      }
      Result<Block> r = *flight->result;
      lk.unlock();
      // The fetching caller ran out of its own (earlier) deadline; we still have time: go again.
      if (!r.ok() && r.error().code() == Errc::kTimeout && Clock::now() < deadline) continue;
      return r;
    }

    // Leader. A previous flight may have completed (and filled the cache) between our local
    // lookup and the registration above, so look once more before going to the network.
    std::optional<Result<Block>> result;
    if (auto b = LookupLocal(cid, /*cache_only=*/true)) {
      result.emplace(std::move(*b));
    } else {
      result.emplace(FetchFromSources(cid, deadline));
      if (result->ok() && cache_) {
        // Queued before the flight is retired, so that anyone who misses the flight finds the
        // block in the pending queue or the cache.
        CachePut(**result);
      }
      if (!result->ok()) CountFailure(result->error());
    }
    {
      std::lock_guard lk(flights_mu_);
      flights_.erase(cid);
    }
    {
      std::lock_guard lk(flight->mu);
      flight->result = *result;
      flight->done = true;
    }
    flight->cv.notify_all();
    return std::move(*result);
  }
}

milliseconds Fetcher::Backoff(uint32_t attempt) {
  // Equal jitter: half fixed, half random, so that retries of many readers spread out but each
  // still waits a meaningful minimum.
  thread_local std::mt19937_64 rng{std::random_device{}()};
  int64_t base = std::max<int64_t>(1, config_.retry_backoff_ms);
  int64_t d = base << std::min<uint32_t>(attempt, 20);
  d = std::min<int64_t>(d, kMaxBackoff.count());
  std::uniform_int_distribution<int64_t> dist(d / 2, d);
  return milliseconds(dist(rng));
}

Result<Block> Fetcher::FetchFromSources(const mf::Cid& cid, Deadline deadline) {
  const auto start = Clock::now();
  const std::string cid_str = cid.ToString();
  if (sources_.empty()) {
    return NotFound("block " + cid_str + " is not local and no remote sources are configured");
  }
  struct Outcome {
    bool tried = false;
    uint32_t attempts = 0;
    std::optional<Error> last;
  };
  std::vector<Outcome> outcomes(sources_.size());

  auto describe = [&]() {
    std::string s;
    for (size_t i = 0; i < sources_.size(); ++i) {
      if (i) s += "; ";
      s += sources_[i]->name() + ": ";
      const Outcome& o = outcomes[i];
      if (!o.tried) {
        s += "not tried";
        continue;
      }
      s += o.last ? o.last->ToString() : "no answer";
      if (o.attempts > 1) s += " (" + std::to_string(o.attempts) + " attempts)";
    }
    return s;
  };
  auto timeout = [&]() -> Error {
    return Timeout("block " + cid_str + ": deadline passed after " +
                   std::to_string(MsSince(start)) + " ms; sources tried: " + describe());
  };

  for (size_t i = 0; i < sources_.size(); ++i) {
    BlockSource* src = sources_[i];
    SourceCounters& c = *counters_[i];
    Outcome& o = outcomes[i];
    for (uint32_t attempt = 0;; ++attempt) {
      auto now = Clock::now();
      if (now >= deadline) return timeout();
      o.tried = true;
      ++o.attempts;
      Deadline req_deadline = std::min(deadline, now + milliseconds(config_.block_timeout_ms));
      c.requests.fetch_add(1, std::memory_order_relaxed);
      auto r = src->Get(cid, req_deadline);
      if (r.ok()) {
        if (r->cid() != cid) {
          // A source bug (it verified against another CID). Never hand that out.
          c.other_errors.fetch_add(1, std::memory_order_relaxed);
          o.last = Internal(src->name() + " returned block " + r->cid().ToString());
          break;
        }
        c.blocks.fetch_add(1, std::memory_order_relaxed);
        c.bytes.fetch_add(r->size(), std::memory_order_relaxed);
        fetched_.fetch_add(1, std::memory_order_relaxed);
        fetched_bytes_.fetch_add(r->size(), std::memory_order_relaxed);
        return r;
      }
      o.last = r.error();
      const Errc code = r.error().code();
      bool retryable = false;
      switch (code) {
        case Errc::kNotFound:
          c.not_found.fetch_add(1, std::memory_order_relaxed);
          break;
        case Errc::kCorrupt:
          c.corrupt.fetch_add(1, std::memory_order_relaxed);
          IPFLY_LOG_WARN("fetcher: {} sent corrupt data for {}: {}", src->name(), cid_str,
                         r.error().message());
          break;
        case Errc::kTimeout:
          c.timeouts.fetch_add(1, std::memory_order_relaxed);
          retryable = true;
          break;
        case Errc::kUnavailable:
          c.unavailable.fetch_add(1, std::memory_order_relaxed);
          retryable = true;
          break;
        default: {
          c.other_errors.fetch_add(1, std::memory_order_relaxed);
          const mf::Cid* root = ReadRootScope::Current();
          const std::string object = root ? root->ToString() : cid_str;
          uint64_t suppressed = 0;
          if (FailureWarns().Allow(object + "|" + src->name() + "|" + CodeText(code),
                                   &suppressed)) {
            std::string note;
            if (suppressed) {
              note = " (" + std::to_string(suppressed) + " similar failure(s) for " + object +
                     " not logged in the last " + std::to_string(kFailureWarnInterval.count()) +
                     " s)";
            } else if (root) {
              note = " (read of " + object + "; repeats logged at most once a minute)";
            }
            IPFLY_LOG_WARN("fetcher: {} failed for {}: {}{}", src->name(), cid_str,
                           r.error().ToString(), note);
          }
          break;
        }
      }
      if (!retryable || attempt >= config_.retries) break;
      if (Clock::now() >= deadline) return timeout();
      milliseconds wait = Backoff(attempt);
      if (auto hint = RetryAfterHint(r.error())) wait = std::max(wait, *hint);
      if (Clock::now() + wait >= deadline) break;  // no time to wait here: try the next source
      IPFLY_LOG_DEBUG("fetcher: {} {} for {}, retrying in {} ms", src->name(), CodeText(code),
                      cid_str, wait.count());
      c.retries.fetch_add(1, std::memory_order_relaxed);
      std::this_thread::sleep_for(wait);
    }
  }

  // Every source answered. Decide which failure best describes the outcome.
  bool all_not_found = true, any_transient = false, any_corrupt = false;
  std::optional<Errc> first_other;
  for (const Outcome& o : outcomes) {
    if (!o.last) continue;
    Errc c = o.last->code();
    if (c != Errc::kNotFound) all_not_found = false;
    if (c == Errc::kUnavailable || c == Errc::kTimeout) any_transient = true;
    if (c == Errc::kCorrupt) any_corrupt = true;
    if (c != Errc::kNotFound && c != Errc::kUnavailable && c != Errc::kTimeout &&
        c != Errc::kCorrupt && !first_other) {
      first_other = c;
    }
  }
  if (Clock::now() >= deadline) return timeout();
  if (all_not_found) return NotFound("block " + cid_str + " not found; sources: " + describe());
  Errc code = any_transient ? Errc::kUnavailable
              : any_corrupt ? Errc::kCorrupt
                            : first_other.value_or(Errc::kUnavailable);
  return Error(code, "block " + cid_str + " could not be fetched; sources: " + describe());
}

// A root alone says little: the reader fetches (and so caches) the root before a stream has even
// started. The DAG is taken as local when the root and its first and last children are.
bool Fetcher::DagLikelyLocal(const mf::Cid& root) {
  if (!HasLocal(root)) return false;
  if (root.codec() != mf::kCodecDagPb) return true;
  auto block = GetLocal(root);
  if (!block.ok()) return false;
  auto node = codec::DecodeDagPb(block->data());
  if (!node.ok() || node->links.empty()) return true;
  return HasLocal(node->links.front().hash) && HasLocal(node->links.back().hash);
}

Status Fetcher::StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                          const std::function<Status(const Block&)>& on_block) {
  if (DagLikelyLocal(root)) {
    return Unsupported("DAG " + root.ToString() + " is local; read it block by block");
  }
  std::string errors;
  bool any_streamed = false;
  for (size_t i = 0; i < sources_.size(); ++i) {
    BlockSource* src = sources_[i];
    SourceCounters& c = *counters_[i];
    if (Clock::now() >= deadline) break;
    uint64_t delivered = 0;
    bool consumer_failed = false;
    Status st = src->StreamDag(root, range, deadline, [&](const Block& b) -> Status {
      ++delivered;
      c.stream_blocks.fetch_add(1, std::memory_order_relaxed);
      c.stream_bytes.fetch_add(b.size(), std::memory_order_relaxed);
      if (cache_) CachePut(b);
      Status fwd = on_block(b);
      if (!fwd.ok()) consumer_failed = true;
      return fwd;
    });
    if (st.ok()) {
      c.streams.fetch_add(1, std::memory_order_relaxed);
      return st;
    }
    if (st.error().code() == Errc::kUnsupported && delivered == 0) continue;
    c.streams.fetch_add(1, std::memory_order_relaxed);
    any_streamed = true;
    if (consumer_failed || delivered > 0) return st;
    IPFLY_LOG_DEBUG("fetcher: streaming {} from {} failed: {}", root.ToString(), src->name(),
                    st.error().ToString());
    if (!errors.empty()) errors += "; ";
    errors += src->name() + ": " + st.error().ToString();
  }
  if (!any_streamed) return Unsupported("no source can stream " + root.ToString());
  if (Clock::now() >= deadline) {
    return Timeout("streaming " + root.ToString() + ": deadline passed; " + errors);
  }
  return Unavailable("streaming " + root.ToString() + " failed: " + errors);
}

FetcherStats Fetcher::stats() const {
  FetcherStats s;
  auto ld = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  s.gets = ld(gets_);
  s.identity = ld(identity_);
  s.store_hits = ld(store_hits_);
  s.cache_hits = ld(cache_hits_);
  s.collapsed = ld(collapsed_);
  s.fetched = ld(fetched_);
  s.fetched_bytes = ld(fetched_bytes_);
  s.local_corrupt = ld(local_corrupt_);
  s.cache_put_errors = ld(cache_put_errors_);
  s.failed_not_found = ld(failed_not_found_);
  s.failed_timeout = ld(failed_timeout_);
  s.failed_unavailable = ld(failed_unavailable_);
  s.failed_corrupt = ld(failed_corrupt_);
  s.failed_other = ld(failed_other_);
  for (size_t i = 0; i < sources_.size(); ++i) {
    const SourceCounters& c = *counters_[i];
    SourceStats ss;
    ss.name = sources_[i]->name();
    ss.requests = ld(c.requests);
    ss.blocks = ld(c.blocks);
    ss.bytes = ld(c.bytes);
    ss.retries = ld(c.retries);
    ss.not_found = ld(c.not_found);
    ss.corrupt = ld(c.corrupt);
    ss.unavailable = ld(c.unavailable);
    ss.timeouts = ld(c.timeouts);
    ss.other_errors = ld(c.other_errors);
    ss.streams = ld(c.streams);
    ss.stream_blocks = ld(c.stream_blocks);
    ss.stream_bytes = ld(c.stream_bytes);
    s.sources.push_back(std::move(ss));
  }
  return s;
}

namespace {

// Prometheus label values escape backslash, double quote and newline.
std::string LabelValue(std::string_view v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\' || ch == '"') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  return out;
}

void Family(std::string* out, std::string_view name, std::string_view help) {
  *out += "# HELP ";
  *out += name;
  *out += ' ';
  *out += help;
  *out += "\n# TYPE ";
  *out += name;
  *out += " counter\n";
}

void Sample(std::string* out, std::string_view name, std::string_view labels, uint64_t v) {
  *out += name;
  if (!labels.empty()) {
    *out += '{';
    *out += labels;
    *out += '}';
  }
  *out += ' ';
  *out += std::to_string(v);
  *out += '\n';
}

}  // namespace

std::string Fetcher::MetricsText() const {
  FetcherStats s = stats();
  std::string out;
  Family(&out, "ipfly_fetch_gets_total", "Block Get calls.");
  Sample(&out, "ipfly_fetch_gets_total", "", s.gets);
  Family(&out, "ipfly_fetch_hits_total", "Blocks answered without the network, by layer.");
  Sample(&out, "ipfly_fetch_hits_total", "layer=\"identity\"", s.identity);
  Sample(&out, "ipfly_fetch_hits_total", "layer=\"store\"", s.store_hits);
  Sample(&out, "ipfly_fetch_hits_total", "layer=\"cache\"", s.cache_hits);
  Family(&out, "ipfly_fetch_collapsed_total", "Gets that shared another caller's fetch.");
  Sample(&out, "ipfly_fetch_collapsed_total", "", s.collapsed);
  Family(&out, "ipfly_fetch_local_corrupt_total", "Local copies that failed re-verification.");
  Sample(&out, "ipfly_fetch_local_corrupt_total", "", s.local_corrupt);
  Family(&out, "ipfly_fetch_cache_put_errors_total", "Fetched blocks that could not be cached.");
  Sample(&out, "ipfly_fetch_cache_put_errors_total", "", s.cache_put_errors);
  Family(&out, "ipfly_fetch_failures_total", "Gets that failed, by error kind.");
  Sample(&out, "ipfly_fetch_failures_total", "kind=\"not_found\"", s.failed_not_found);
  Sample(&out, "ipfly_fetch_failures_total", "kind=\"timeout\"", s.failed_timeout);
  Sample(&out, "ipfly_fetch_failures_total", "kind=\"unavailable\"", s.failed_unavailable);
  Sample(&out, "ipfly_fetch_failures_total", "kind=\"corrupt\"", s.failed_corrupt);
  Sample(&out, "ipfly_fetch_failures_total", "kind=\"other\"", s.failed_other);

  struct Col {
    const char* name;
    const char* help;
    uint64_t SourceStats::*field;
  };
  static const Col kCols[] = {
      {"ipfly_fetch_source_requests_total", "Block requests sent to a source.",
       &SourceStats::requests},
      {"ipfly_fetch_source_blocks_total", "Blocks a source delivered (Get).", &SourceStats::blocks},
      {"ipfly_fetch_source_bytes_total", "Bytes a source delivered (Get).", &SourceStats::bytes},
      {"ipfly_fetch_source_retries_total", "Backoff waits before retrying a source.",
       &SourceStats::retries},
      {"ipfly_fetch_source_stream_blocks_total", "Blocks a source delivered by streaming.",
       &SourceStats::stream_blocks},
      {"ipfly_fetch_source_stream_bytes_total", "Bytes a source delivered by streaming.",
       &SourceStats::stream_bytes},
  };
  for (const Col& col : kCols) {
    Family(&out, col.name, col.help);
    for (const auto& ss : s.sources) {
      Sample(&out, col.name, "source=\"" + LabelValue(ss.name) + "\"", ss.*col.field);
    }
  }
  Family(&out, "ipfly_fetch_source_errors_total", "Failed source requests, by error kind.");
  for (const auto& ss : s.sources) {
    std::string l = "source=\"" + LabelValue(ss.name) + "\",kind=";
    Sample(&out, "ipfly_fetch_source_errors_total", l + "\"not_found\"", ss.not_found);
    Sample(&out, "ipfly_fetch_source_errors_total", l + "\"corrupt\"", ss.corrupt);
    Sample(&out, "ipfly_fetch_source_errors_total", l + "\"unavailable\"", ss.unavailable);
    Sample(&out, "ipfly_fetch_source_errors_total", l + "\"timeout\"", ss.timeouts);
    Sample(&out, "ipfly_fetch_source_errors_total", l + "\"other\"", ss.other_errors);
  }
  out += SourceMetricsText();
  return out;
}

std::string Fetcher::SourceMetricsText() const {
  std::string out;
  for (const BlockSource* src : sources_) out += src->ExtraMetricsText();
  return out;
}

}  // namespace ipfly::fetch
