#include "ipfs_fetch/powergate/cold_source.h"

#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/base/log.h"
#include "ipfs_fetch/fs_block_store.h"

namespace ipfly::fetch::powergate {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Label(std::string_view v) {
  std::string out;
  for (char ch : v) {
    if (ch == '\\' || ch == '"') out += '\\';
    if (ch == '\n') {
      out += "\\n";
      continue;
    }
    out += ch;
  }
  return out;
}

// Collects the blocks of a re-import in memory: nothing reaches a store before the root CID
// has been checked.
class Collector : public BlockSink {
 public:
  Status Put(const Block& b) override {
    blocks.push_back(b);
    return OkStatus();
  }
  std::vector<Block> blocks;
};

Error BeingRetrieved(const std::string& root, const ThawJob& job) {
  return Unavailable(root + " is being retrieved from Filecoin, job " + job.job_id + " (" +
                     std::string(JobStatusName(job.status)) +
                     "); reads will succeed once the job is SUCCESS");
}

}  // namespace

struct PowergateSource::Object {
  explicit Object(mf::Cid c) : root(std::move(c)) {}
  const mf::Cid root;
  std::mutex mu;
  std::condition_variable cv;
  bool busy = false;    // a worker is running Advance
  bool loaded = false;  // every block is in the landing store
  bool hot = false;     // hot in Powergate (as of hot_at)
  bool proxy_failed = false;
  Clock::time_point hot_at{};
  uint64_t round = 0;
  std::optional<Error> last_error;
};

PowergateSource::PowergateSource(std::shared_ptr<Client> client, ColdSourceOptions options)
    : client_(std::move(client)), options_(std::move(options)) {}

Result<std::unique_ptr<PowergateSource>> PowergateSource::Open(std::shared_ptr<Client> client,
                                                               ColdSourceOptions options) {
  IPFLY_RETURN_IF_ERROR(options.profile.Validate());
  auto src = std::unique_ptr<PowergateSource>(new PowergateSource(std::move(client), options));
  if (!options.config.state_dir.empty()) {
    std::error_code ec;
    fs::create_directories(options.config.state_dir, ec);
    if (ec) {
      return IoError("powergate state_dir " + options.config.state_dir + ": " + ec.message());
    }
    src->state_file_ = options.config.state_dir + "/jobs.json";
    auto jobs = IPFLY_TRY(LoadJobs(options.config.state_dir));
    for (auto& j : jobs) src->jobs_[j.cid] = std::move(j);
  }
  if (options.landing) {
    src->landing_ = options.landing;
  } else {
    src->owned_landing_ = std::make_unique<MemoryBlockStore>("powergate landing");
    src->landing_ = src->owned_landing_.get();
  }
  if (!options.config.ipfs_proxy.empty()) {
    KuboRpcOptions ko;
    ko.headers.emplace_back(std::string(kProxyAuthHeader), src->client_->token());
    auto kc = std::make_shared<KuboRpcClient>(options.config.ipfs_proxy, options.http, ko);
    src->proxy_ = std::make_unique<KuboRpcSource>(std::move(kc));
  }
  if (options.watch_jobs) {
    src->watcher_ = std::thread([s = src.get()] { s->WatchLoop(); });
  }
  return src;
}

PowergateSource::~PowergateSource() {
  {
    std::lock_guard lk(jobs_mu_);
    stop_ = true;
    if (watch_canceller_) watch_canceller_->Cancel();
  }
  jobs_cv_.notify_all();
  if (watcher_.joinable()) watcher_.join();
}

Result<std::vector<ThawJob>> PowergateSource::LoadJobs(const std::string& state_dir) {
  std::vector<ThawJob> out;
  const std::string path = state_dir + "/jobs.json";
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!fs::exists(path)) return out;
    return IoError("cannot read " + path);
  }
  std::stringstream ss;
  ss << in.rdbuf();
  auto doc = nlohmann::json::parse(ss.str(), nullptr, false);
  if (!doc.is_object() || !doc["jobs"].is_array()) {
    return Corrupt(path + ": not an ipfly powergate job file");
  }
  for (const auto& j : doc["jobs"]) {
    if (!j.is_object() || !j["cid"].is_string() || !j["job_id"].is_string()) {
      return Corrupt(path + ": bad job entry");
    }
    ThawJob t;
    t.cid = j["cid"].get<std::string>();
    t.job_id = j["job_id"].get<std::string>();
    t.status = JobStatusFromName(j.value("state", std::string()));
    t.error_cause = j.value("error", std::string());
    t.started_unix = j.value("started_unix", int64_t{0});
    t.updated_unix = j.value("updated_unix", int64_t{0});
    out.push_back(std::move(t));
  }
  return out;
}

Status PowergateSource::SaveJobsLocked() {
  if (state_file_.empty()) return OkStatus();
  nlohmann::json doc;
  doc["jobs"] = nlohmann::json::array();
  for (const auto& [cid, j] : jobs_) {
    doc["jobs"].push_back({{"cid", j.cid},
                           {"job_id", j.job_id},
                           {"state", std::string(JobStatusName(j.status))},
                           {"error", j.error_cause},
                           {"started_unix", j.started_unix},
                           {"updated_unix", j.updated_unix}});
  }
  const std::string text = doc.dump(1) + "\n";
  const std::string tmp = state_file_ + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("create " + tmp, errno);
  size_t off = 0;
  while (off < text.size()) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      return ErrnoError("write " + tmp, e);
    }
    off += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0) {
    int e = errno;
    ::close(fd);
    return ErrnoError("fsync " + tmp, e);
  }
  ::close(fd);
  if (::rename(tmp.c_str(), state_file_.c_str()) != 0) {
    return ErrnoError("rename " + tmp, errno);
  }
  int dfd = ::open(options_.config.state_dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  return OkStatus();
}

std::optional<ThawJob> PowergateSource::JobFor(const std::string& cid) const {
  std::lock_guard lk(jobs_mu_);
  auto it = jobs_.find(cid);
  if (it == jobs_.end()) return std::nullopt;
  return it->second;
}

std::vector<ThawJob> PowergateSource::Jobs() const {
  std::lock_guard lk(jobs_mu_);
  std::vector<ThawJob> out;
  for (const auto& [cid, j] : jobs_) out.push_back(j);
  return out;
}

void PowergateSource::UpdateJob(const pb::StorageJob& job) {
  std::lock_guard lk(jobs_mu_);
  for (auto& [cid, j] : jobs_) {
    if (j.job_id != job.id()) continue;
    if (j.status == job.status() && j.error_cause == job.error_cause()) return;
    IPFLY_LOG_INFO("powergate: thaw job {} of {}: {} -> {}{}", j.job_id, j.cid,
                   JobStatusName(j.status), JobStatusName(job.status()),
                   job.error_cause().empty() ? "" : " (" + job.error_cause() + ")");
    j.status = job.status();
    j.error_cause = job.error_cause();
    j.updated_unix = UnixNow();
    Status st = SaveJobsLocked();
    if (!st.ok()) IPFLY_LOG_WARN("powergate: saving thaw jobs: {}", st.error().ToString());
    return;
  }
}

void PowergateSource::WatchLoop() {
  const milliseconds poll(std::max<uint32_t>(10, options_.config.job_poll_ms));
  auto active_ids = [&] {
    std::vector<std::string> ids;
    for (const auto& [cid, j] : jobs_) {
      if (!IsFinal(j.status)) ids.push_back(j.job_id);
    }
    return ids;
  };
  std::unique_lock lk(jobs_mu_);
  while (!stop_) {
    new_job_ = false;
    std::vector<std::string> ids = active_ids();
    if (ids.empty()) {
      jobs_cv_.wait(lk, [&] { return stop_ || new_job_; });
      continue;
    }
    lk.unlock();
    // A poll first: catches jobs that ended while nobody watched (restarts) and servers whose
    // watch stream only reports changes.
    for (const auto& id : ids) {
      auto j = client_->StorageJob(id, Clock::now() + std::min(poll * 5, milliseconds(5000)));
      if (j.ok()) {
        UpdateJob(*j);
      } else {
        IPFLY_LOG_DEBUG("powergate: polling job {}: {}", id, j.error().ToString());
      }
    }
    lk.lock();
    ids = active_ids();
    if (!ids.empty() && !stop_) {
      CallCanceller canceller;
      watch_canceller_ = &canceller;
      lk.unlock();
      const auto started = Clock::now();
      Status st = client_->WatchStorageJobs(
          ids, Clock::now() + std::max(poll * 10, milliseconds(5000)),
          [&](const pb::StorageJob& job) {
            UpdateJob(job);
            std::lock_guard g(jobs_mu_);
            return !stop_ && !active_ids().empty() && !new_job_;
          },
          &canceller);
      lk.lock();
      watch_canceller_ = nullptr;
      if (!st.ok() && st.error().code() != Errc::kTimeout &&
          st.error().code() != Errc::kCancelled) {
        IPFLY_LOG_DEBUG("powergate: watching jobs: {}", st.error().ToString());
      }
      // A stream that ended at once (or failed) must not turn into a busy loop.
      if (Clock::now() - started >= poll) continue;
    }
    jobs_cv_.wait_for(lk, poll, [&] { return stop_ || new_job_; });
  }
}

std::shared_ptr<PowergateSource::Object> PowergateSource::ObjectFor(const mf::Cid& root) {
  std::lock_guard lk(objects_mu_);
  auto& slot = objects_[root];
  if (!slot) slot = std::make_shared<Object>(root);
  return slot;
}

void PowergateSource::RecordJob(const ThawJob& job) {
  {
    std::lock_guard lk(jobs_mu_);
    jobs_[job.cid] = job;
    new_job_ = true;
    // A running watch does not cover the new job: end it so the watcher starts over.
    if (watch_canceller_) watch_canceller_->Cancel();
    Status st = SaveJobsLocked();
    if (!st.ok()) IPFLY_LOG_WARN("powergate: saving thaw jobs: {}", st.error().ToString());
  }
  jobs_cv_.notify_all();
}

std::optional<ThawJob> PowergateSource::AdoptRunning(const std::string& root_str,
                                                     const pb::CidInfo& info) {
  const pb::StorageJob* running = nullptr;
  if (info.has_executing_storage_job()) {
    running = &info.executing_storage_job();
  } else if (info.queued_storage_jobs_size() > 0) {
    running = &info.queued_storage_jobs(info.queued_storage_jobs_size() - 1);
  }
  if (!running || running->id().empty() || IsFinal(running->status())) return std::nullopt;
  ThawJob adopted;
  adopted.cid = root_str;
  adopted.job_id = running->id();
  adopted.status = running->status();
  adopted.started_unix = running->created_at();
  adopted.updated_unix = UnixNow();
  RecordJob(adopted);
  IPFLY_LOG_INFO("powergate: following job {} that Powergate already runs for {}", adopted.job_id,
                 root_str);
  return adopted;
}

Result<ThawJob> PowergateSource::StartThaw(const mf::Cid& root, const pb::CidInfo& info,
                                           Deadline deadline) {
  const std::string root_str = root.ToString();
  if (options_.config.unfreeze_max_price == 0) {
    return Error(Errc::kFailedPrecondition,
                 root_str + " is only in Filecoin cold storage and thaws are disabled " +
                     "([powergate] unfreeze_max_price = 0)");
  }
  pb::StorageConfig cfg = info.latest_pushed_storage_config();
  if (!info.has_latest_pushed_storage_config()) {
    cfg = IPFLY_TRY(client_->DefaultStorageConfig(deadline));
    cfg.mutable_cold()->set_enabled(true);
  }
  pb::HotConfig* hot = cfg.mutable_hot();
  hot->set_enabled(true);
  hot->set_allow_unfreeze(true);
  hot->set_unfreeze_max_price(options_.config.unfreeze_max_price);
  std::string id = IPFLY_TRY(client_->ApplyStorageConfig(root_str, cfg, true, deadline));
  ThawJob job;
  job.cid = root_str;
  job.job_id = id;
  job.status = pb::JOB_STATUS_QUEUED;
  job.started_unix = job.updated_unix = UnixNow();
  RecordJob(job);
  thaws_started_.fetch_add(1, std::memory_order_relaxed);
  IPFLY_LOG_INFO("powergate: started thaw job {} for {} (max price {} attoFIL)", id, root_str,
                 options_.config.unfreeze_max_price);
  return job;
}

Result<ThawJob> PowergateSource::Thaw(const mf::Cid& root, Deadline deadline) {
  const std::string root_str = root.ToString();
  if (auto job = JobFor(root_str); job && !IsFinal(job->status)) return *job;
  auto info = IPFLY_TRY(client_->CidInfo(root_str, deadline));
  if (info.current_storage_info().hot().enabled()) {
    ThawJob j;
    j.cid = root_str;
    j.status = pb::JOB_STATUS_SUCCESS;
    return j;
  }
  if (!info.current_storage_info().cold().enabled()) {
    return NotFound("powergate has neither hot nor cold storage for " + root_str);
  }
  if (auto adopted = AdoptRunning(root_str, info)) return *adopted;
  return StartThaw(root, info, deadline);
}

Status PowergateSource::LoadWhole(const mf::Cid& root, Deadline deadline) {
  const std::string root_str = root.ToString();
  loading_.fetch_add(1, std::memory_order_relaxed);
  struct Dec {
    std::atomic<uint64_t>* a;
    ~Dec() { a->fetch_sub(1, std::memory_order_relaxed); }
  } dec{&loading_};
  Collector collector;
  unixfs::FileImporter importer(options_.profile, &collector);
  uint64_t total = 0;
  Status st = client_->Get(root_str, deadline, [&](ByteView chunk) -> Status {
    total += chunk.size();
    if (total > options_.max_object_bytes) {
      return TooLarge("powergate object " + root_str + " is larger than " +
                      std::to_string(options_.max_object_bytes) + " bytes");
    }
    return importer.Write(chunk);
  });
  if (!st.ok()) return std::move(st).error();
  auto node = importer.Finish();
  if (!node.ok()) return std::move(node).error().With("re-importing " + root_str);
  if (node->cid.multihash() != root.multihash() || node->cid.codec() != root.codec()) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return Corrupt("powergate returned " + std::to_string(total) + " bytes for " + root_str +
                   " whose re-import (profile " + options_.profile.name + ") gives " +
                   node->cid.ToString() + ": corrupt or truncated data, rejected, nothing cached");
  }
  for (const Block& b : collector.blocks) {
    Status put = landing_->Put(b);
    if (!put.ok()) return std::move(put).error().With("storing blocks of " + root_str);
  }
  objects_loaded_.fetch_add(1, std::memory_order_relaxed);
  object_bytes_.fetch_add(total, std::memory_order_relaxed);
  IPFLY_LOG_INFO("powergate: fetched {} ({} bytes, {} blocks) with Get", root_str, total,
                 collector.blocks.size());
  return OkStatus();
}

Status PowergateSource::Advance(Object& obj, Deadline deadline, bool* loaded, bool* hot) {
  const std::string root_str = obj.root.ToString();
  if (auto job = JobFor(root_str); job && !IsFinal(job->status)) {
    if (!options_.watch_jobs) {
      auto j = client_->StorageJob(job->job_id, deadline);
      if (j.ok()) UpdateJob(*j);
      job = JobFor(root_str);
    }
    if (job && !IsFinal(job->status)) return BeingRetrieved(root_str, *job);
  }
  auto info = client_->CidInfo(root_str, deadline);
  if (!info.ok()) return std::move(info).error();
  const pb::StorageInfo& cur = info->current_storage_info();
  if (cur.hot().enabled()) {
    *hot = true;
    bool use_proxy = false;
    {
      std::lock_guard lk(obj.mu);
      use_proxy = proxy_ && !obj.proxy_failed;
    }
    if (use_proxy) return OkStatus();
    auto st = LoadWhole(obj.root, deadline);
    if (!st.ok()) return st;
    *loaded = true;
    return OkStatus();
  }
  if (!cur.cold().enabled()) {
    return NotFound("powergate has neither hot nor cold storage for " + root_str);
  }
  if (auto job = JobFor(root_str);
      job && (job->status == pb::JOB_STATUS_FAILED || job->status == pb::JOB_STATUS_CANCELED)) {
    return Error(Errc::kFailedPrecondition,
                 root_str + " is only in Filecoin cold storage and its thaw job " + job->job_id +
                     " ended " + std::string(JobStatusName(job->status)) +
                     (job->error_cause.empty() ? "" : ": " + job->error_cause) +
                     "; run `ipfly thaw " + root_str + "` to start a new retrieval");
  }
  // A job Powergate is already running for this object (started by `ipfly thaw`, another
  // process, or before a restart that lost our state) is followed instead of paying twice.
  if (auto adopted = AdoptRunning(root_str, *info)) return BeingRetrieved(root_str, *adopted);
  auto job = IPFLY_TRY(StartThaw(obj.root, *info, deadline));
  return BeingRetrieved(root_str, job);
}

Status PowergateSource::EnsureReadable(Object& obj, Deadline deadline) {
  std::unique_lock lk(obj.mu);
  for (;;) {
    if (obj.loaded) return OkStatus();
    if (proxy_ && !obj.proxy_failed && obj.hot && Clock::now() - obj.hot_at < options_.hot_ttl) {
      return OkStatus();
    }
    if (obj.busy) {
      const uint64_t seen = obj.round;
      if (!obj.cv.wait_until(lk, deadline, [&] { return !obj.busy; })) {
        return Timeout("deadline passed waiting for powergate to deliver " + obj.root.ToString());
      }
      if (obj.round != seen && obj.last_error) return *obj.last_error;
      continue;
    }
    obj.busy = true;
    lk.unlock();
    bool loaded = false, hot = false;
    Status st = Advance(obj, deadline, &loaded, &hot);
    lk.lock();
    obj.busy = false;
    ++obj.round;
    if (loaded) obj.loaded = true;
    if (hot) {
      obj.hot = true;
      obj.hot_at = Clock::now();
    }
    obj.last_error.reset();
    if (!st.ok()) obj.last_error = st.error();
    obj.cv.notify_all();
    if (!st.ok()) return st;
    if (!loaded && !hot) return Internal("powergate: no progress on " + obj.root.ToString());
  }
}

Result<Block> PowergateSource::Get(const mf::Cid& cid, Deadline deadline) {
  gets_.fetch_add(1, std::memory_order_relaxed);
  const mf::Cid* scoped = ReadRootScope::Current();
  const mf::Cid root = scoped ? *scoped : cid;
  auto obj = ObjectFor(root);
  for (int attempt = 0; attempt < 3; ++attempt) {
    IPFLY_RETURN_IF_ERROR(EnsureReadable(*obj, deadline));
    bool loaded;
    {
      std::lock_guard lk(obj->mu);
      loaded = obj->loaded;
    }
    if (!loaded && proxy_) {
      auto b = proxy_->Get(cid, deadline);
      if (b.ok()) {
        proxy_blocks_.fetch_add(1, std::memory_order_relaxed);
        return b;
      }
      if (b.error().code() == Errc::kCorrupt || b.error().code() == Errc::kTimeout) {
        return std::move(b).error().With("powergate IPFS proxy");
      }
      // The proxy cannot serve it (down, refused, lost): read the whole object with Get.
      IPFLY_LOG_WARN("powergate: IPFS proxy failed for {} ({}); falling back to Get of {}",
                     cid.ToString(), b.error().ToString(), root.ToString());
      std::lock_guard lk(obj->mu);
      obj->proxy_failed = true;
      continue;
    }
    auto b = landing_->Get(cid, deadline);
    if (b.ok()) return b;
    if (b.error().code() != Errc::kNotFound) return b;
    auto has_root = landing_->Has(root);
    if (has_root.ok() && *has_root) {
      return NotFound("block " + cid.ToString() + " is not part of powergate object " +
                      root.ToString());
    }
    // Evicted from the landing store (cache cap) since it was loaded: load it again.
    std::lock_guard lk(obj->mu);
    obj->loaded = false;
  }
  return Unavailable("powergate: could not keep " + root.ToString() + " readable");
}

Status PowergateSource::StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                                  const std::function<Status(const Block&)>& on_block) {
  if (!proxy_) return Unsupported(name() + " streams only through its IPFS proxy");
  auto obj = ObjectFor(root);
  IPFLY_RETURN_IF_ERROR(EnsureReadable(*obj, deadline));
  {
    std::lock_guard lk(obj->mu);
    if (obj->loaded || obj->proxy_failed) {
      return Unsupported(root.ToString() + " is read with Get here, block by block");
    }
  }
  Status st = proxy_->StreamDag(root, range, deadline, [&](const Block& b) {
    proxy_blocks_.fetch_add(1, std::memory_order_relaxed);
    return on_block(b);
  });
  if (!st.ok()) return std::move(st).error().With("powergate IPFS proxy");
  return st;
}

ColdSourceStats PowergateSource::stats() const {
  ColdSourceStats s;
  auto ld = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  s.gets = ld(gets_);
  s.proxy_blocks = ld(proxy_blocks_);
  s.objects_loaded = ld(objects_loaded_);
  s.object_bytes = ld(object_bytes_);
  s.rejected = ld(rejected_);
  s.thaws_started = ld(thaws_started_);
  s.loading = ld(loading_);
  s.jobs = Jobs();
  return s;
}

std::string PowergateSource::ExtraMetricsText() const {
  ColdSourceStats s = stats();
  uint64_t in_flight = s.loading;
  for (const auto& j : s.jobs) in_flight += IsFinal(j.status) ? 0 : 1;
  std::string out;
  auto gauge = [&](const char* name, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " gauge\n";
  };
  auto counter = [&](const char* name, const char* help, uint64_t v) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " counter\n";
    out += std::string(name) + " " + std::to_string(v) + "\n";
  };
  gauge("ipfly_powergate_cold_retrievals_in_flight",
        "Thaw jobs not yet final plus objects being streamed from Powergate.");
  out += "ipfly_powergate_cold_retrievals_in_flight " + std::to_string(in_flight) + "\n";
  gauge("ipfly_powergate_thaw_job", "Thaw jobs known to this process (1 per job, by state).");
  for (const auto& j : s.jobs) {
    out += "ipfly_powergate_thaw_job{cid=\"" + Label(j.cid) + "\",job_id=\"" + Label(j.job_id) +
           "\",state=\"" + std::string(JobStatusName(j.status)) + "\"} 1\n";
  }
  counter("ipfly_powergate_gets_total", "Block requests that reached the Powergate source.",
          s.gets);
  counter("ipfly_powergate_proxy_blocks_total", "Blocks read through Powergate's IPFS proxy.",
          s.proxy_blocks);
  counter("ipfly_powergate_objects_loaded_total", "Whole objects fetched with Get and verified.",
          s.objects_loaded);
  counter("ipfly_powergate_object_bytes_total", "Bytes of those objects.", s.object_bytes);
  counter("ipfly_powergate_rejected_total",
          "Get answers rejected because their re-import did not give the requested CID.",
          s.rejected);
  counter("ipfly_powergate_thaws_started_total", "Thaw jobs started by this process.",
          s.thaws_started);
  return out;
}

}  // namespace ipfly::fetch::powergate
