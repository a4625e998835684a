#include "tests/support/fake_powergate.h"

#include <grpcpp/grpcpp.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "core/block.h"
#include "core/unixfs/importer.h"
#include "ipfs_fetch/powergate/user.grpc.pb.h"

namespace ipfly::testing {
namespace {

namespace pb = ::powergate::user::v1;
using Clock = std::chrono::steady_clock;
constexpr size_t kChunk = 32 * 1024;  // Powergate's Get buffer (api/server/user/data.go)

class MapSink : public BlockSink {
 public:
  Status Put(const Block& b) override {
    blocks.emplace(b.cid().multihash(), b);
    return OkStatus();
  }
  std::unordered_map<mf::Multihash, Block> blocks;
};

struct Object {
  Bytes data;
  std::unordered_map<mf::Multihash, Block> blocks;
  bool hot = false, cold = false, staged = false;
  bool has_config = false;
  pb::StorageConfig config;
};

struct Job {
  std::string id, cid;
  pb::JobStatus status = pb::JOB_STATUS_QUEUED;
  std::string cause;
  int64_t created = 0;
  Clock::time_point exec_at, done_at;
  bool held = false;
  bool will_fail = false;
  std::string fail_cause;
  bool final_hot = false, final_cold = false;
};

}  // namespace

struct FakePowergate::Impl final : public pb::UserService::Service {
  FakePowergateOptions opts;
  unixfs::ImportProfile profile;
  mutable std::mutex mu;
  std::condition_variable cv;             // job changes
  std::map<std::string, Object> objects;  // by CID string
  std::map<std::string, Job> jobs;
  uint64_t next_job = 1;
  DataMode data_mode = DataMode::kGood;
  ThawMode thaw_mode = ThawMode::kSucceed;
  std::string thaw_fail_cause;
  std::chrono::milliseconds thaw_time{300};
  bool stopping = false;
  Counters counters;
  NetworkFetch network;
  std::vector<std::string> staged_log;

  std::unique_ptr<grpc::Server> server;
  int grpc_port = 0;
  httplib::Server http;
  int http_port = 0;
  std::thread http_thread, ticker;

  bool ValidToken(const std::string& t) const {
    return std::find(opts.tokens.begin(), opts.tokens.end(), t) != opts.tokens.end();
  }

  // Powergate's getInstanceByToken: the token from metadata "x-ffs-token".
  grpc::Status Auth(grpc::ServerContext* ctx) {
    const auto& md = ctx->client_metadata();
    auto it = md.find("x-ffs-token");
    std::lock_guard lk(mu);
    if (it == md.end() || it->second.empty()) {
      ++counters.denied;
      return {grpc::StatusCode::PERMISSION_DENIED, "auth token can't be empty"};
    }
    if (!ValidToken(std::string(it->second.data(), it->second.size()))) {
      ++counters.denied;
      return {grpc::StatusCode::PERMISSION_DENIED, "getting instance from token: token not found"};
    }
    return grpc::Status::OK;
  }

  void FillJob(const Job& j, pb::StorageJob* out) const {
    out->set_id(j.id);
    out->set_api_id("fake-user");
    out->set_cid(j.cid);
    out->set_status(j.status);
    out->set_error_cause(j.cause);
    out->set_created_at(j.created);
  }

  // Advances jobs by the clock; returns true if anything changed. Caller holds mu.
  bool Tick() {
    bool changed = false;
    auto now = Clock::now();
    for (auto& [id, j] : jobs) {
      if (j.status == pb::JOB_STATUS_QUEUED && now >= j.exec_at) {
        j.status = pb::JOB_STATUS_EXECUTING;
        changed = true;
      }
      if (j.status == pb::JOB_STATUS_EXECUTING && !j.held && now >= j.done_at) {
        Finish(j, !j.will_fail, j.fail_cause);
        changed = true;
      }
    }
    return changed;
  }

  void Finish(Job& j, bool ok, const std::string& cause) {
    if (ok) {
      j.status = pb::JOB_STATUS_SUCCESS;
      auto it = objects.find(j.cid);
      if (it != objects.end()) {
        it->second.hot = j.final_hot;
        it->second.cold = j.final_cold;
        it->second.staged = false;  // the applied config governs the hot pin from now on
      }
    } else {
      j.status = pb::JOB_STATUS_FAILED;
      j.cause = cause;
    }
  }

  grpc::Status DefaultStorageConfig(grpc::ServerContext* ctx,
                                    const pb::DefaultStorageConfigRequest*,
                                    pb::DefaultStorageConfigResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    // ffs/manager zeroConfig: hot disabled, cold enabled.
    auto* c = resp->mutable_default_storage_config();
    c->mutable_hot()->set_enabled(false);
    c->mutable_hot()->mutable_ipfs()->set_add_timeout(900);
    c->mutable_cold()->set_enabled(true);
    auto* f = c->mutable_cold()->mutable_filecoin();
    f->set_replication_factor(1);
    f->set_deal_min_duration(518400);
    f->set_fast_retrieval(true);
    f->set_max_price(100000000000ull);
    f->set_deal_start_offset(8640);
    return grpc::Status::OK;
  }

  grpc::Status StageCid(grpc::ServerContext* ctx, const pb::StageCidRequest* req,
                        pb::StageCidResponse*) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    NetworkFetch net;
    {
      std::lock_guard lk(mu);
      ++counters.stage_cid;
      auto it = objects.find(req->cid());
      if (it != objects.end()) {
        it->second.staged = true;
        staged_log.push_back(req->cid());
        return grpc::Status::OK;
      }
      net = network;
    }
    const grpc::Status not_found{grpc::StatusCode::UNKNOWN,
                                 "pinning cid " + req->cid() + ": not found"};
    if (!net) return not_found;
    // Pinned from "the network": fetched outside the lock, kept only if it is that CID.
    auto data = net(req->cid());
    if (!data.ok()) return not_found;
    MapSink sink;
    auto node = unixfs::ImportBytes(*data, profile, &sink);
    if (!node.ok() || node->cid.ToString() != req->cid()) return not_found;
    std::lock_guard lk(mu);
    Object& o = objects[req->cid()];
    o.data = std::move(*data);
    o.blocks = std::move(sink.blocks);
    o.staged = true;
    staged_log.push_back(req->cid());
    return grpc::Status::OK;
  }

  grpc::Status ApplyStorageConfig(grpc::ServerContext* ctx,
                                  const pb::ApplyStorageConfigRequest* req,
                                  pb::ApplyStorageConfigResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    std::lock_guard lk(mu);
    ++counters.apply;
    auto it = objects.find(req->cid());
    if (it == objects.end()) {
      return {grpc::StatusCode::NOT_FOUND, "cid " + req->cid() + " not found (stage it first)"};
    }
    Object& o = it->second;
    if (o.has_config && !(req->has_override_config() && req->override_config())) {
      return {grpc::StatusCode::INVALID_ARGUMENT,
              "cid already pinned, consider using override flag"};
    }
    pb::StorageConfig cfg = req->has_config_flag() ? req->config() : pb::StorageConfig();
    Job j;
    j.id = "job-" + std::to_string(next_job++);
    j.cid = req->cid();
    j.created = std::chrono::duration_cast<std::chrono::seconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
    auto now = Clock::now();
    j.final_hot = cfg.hot().enabled();
    j.final_cold = cfg.cold().enabled() || o.cold;
    const bool thaw = cfg.hot().enabled() && !o.hot && !o.staged;
    if (thaw) {
      ++counters.thaws;
      j.exec_at = now + thaw_time / 4;
      j.done_at = now + thaw_time;
      if (!o.cold) {
        j.will_fail = true;
        j.fail_cause = "data not found in hot or cold storage";
      } else if (!cfg.hot().allow_unfreeze()) {
        j.will_fail = true;
        j.fail_cause = "unfreeze is disabled and data isn't in the IPFS network";
      } else if (cfg.hot().unfreeze_max_price() == 0) {
        j.will_fail = true;
        j.fail_cause = "retrieval price exceeds unfreeze_max_price";
      } else if (thaw_mode == ThawMode::kFail) {
        j.will_fail = true;
        j.fail_cause = thaw_fail_cause;
      } else if (thaw_mode == ThawMode::kHold) {
        j.held = true;
      }
    } else {
      j.exec_at = now + std::chrono::milliseconds(10);
      j.done_at = now + std::chrono::milliseconds(30);
    }
    o.has_config = true;
    o.config = cfg;
    resp->set_job_id(j.id);
    jobs[j.id] = std::move(j);
    cv.notify_all();
    return grpc::Status::OK;
  }

  grpc::Status Get(grpc::ServerContext* ctx, const pb::GetRequest* req,
                   grpc::ServerWriter<pb::GetResponse>* writer) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    Bytes data;
    DataMode mode;
    {
      std::lock_guard lk(mu);
      ++counters.get;
      auto it = objects.find(req->cid());
      if (it == objects.end()) return {grpc::StatusCode::UNKNOWN, "cid not found"};
      // ffs/api Get: ErrHotStorageDisabled, a plain error (code Unknown).
      if (!it->second.hot) return {grpc::StatusCode::UNKNOWN, "cid disabled in hot storage"};
      data = it->second.data;
      mode = data_mode;
    }
    if (mode == DataMode::kCorrupt && !data.empty()) data[data.size() / 2] ^= 0x5a;
    if (mode == DataMode::kTruncated) data.resize(data.size() / 2);
    pb::GetResponse resp;
    for (size_t off = 0; off < data.size(); off += kChunk) {
      size_t n = std::min(kChunk, data.size() - off);
      resp.set_chunk(reinterpret_cast<const char*>(data.data()) + off, n);
      if (!writer->Write(resp)) break;
    }
    return grpc::Status::OK;
  }

  grpc::Status CidInfo(grpc::ServerContext* ctx, const pb::CidInfoRequest* req,
                       pb::CidInfoResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    std::lock_guard lk(mu);
    ++counters.cid_info;
    Tick();
    auto it = objects.find(req->cid());
    if (it == objects.end() || (!it->second.hot && !it->second.cold && !it->second.staged)) {
      return {grpc::StatusCode::NOT_FOUND, "cid info not found"};
    }
    const Object& o = it->second;
    auto* info = resp->mutable_cid_info();
    info->set_cid(req->cid());
    if (o.has_config) *info->mutable_latest_pushed_storage_config() = o.config;
    auto* cur = info->mutable_current_storage_info();
    cur->set_cid(req->cid());
    cur->mutable_hot()->set_enabled(o.hot);
    cur->mutable_hot()->set_size(static_cast<int64_t>(o.data.size()));
    cur->mutable_cold()->set_enabled(o.cold);
    if (o.cold) {
      auto* fil = cur->mutable_cold()->mutable_filecoin();
      fil->set_data_cid(req->cid());
      fil->set_size(o.data.size());
      auto* deal = fil->add_proposals();
      deal->set_deal_id(1000);
      deal->set_miner("f01000");
      deal->set_piece_cid("baga6ea4seaqfakepiececid");
      deal->set_duration(518400);
    }
    for (const auto& [id, j] : jobs) {
      if (j.cid != req->cid()) continue;
      if (j.status == pb::JOB_STATUS_QUEUED) FillJob(j, info->add_queued_storage_jobs());
      if (j.status == pb::JOB_STATUS_EXECUTING) FillJob(j, info->mutable_executing_storage_job());
    }
    return grpc::Status::OK;
  }

  grpc::Status StorageJob(grpc::ServerContext* ctx, const pb::StorageJobRequest* req,
                          pb::StorageJobResponse* resp) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    std::lock_guard lk(mu);
    ++counters.storage_job;
    Tick();
    auto it = jobs.find(req->job_id());
    if (it == jobs.end()) return {grpc::StatusCode::UNKNOWN, "job not found"};
    FillJob(it->second, resp->mutable_storage_job());
    return grpc::Status::OK;
  }

  grpc::Status WatchStorageJobs(grpc::ServerContext* ctx, const pb::WatchStorageJobsRequest* req,
                                grpc::ServerWriter<pb::WatchStorageJobsResponse>* writer) override {
    if (auto s = Auth(ctx); !s.ok()) return s;
    std::map<std::string, pb::JobStatus> sent;
    std::unique_lock lk(mu);
    ++counters.watch;
    for (;;) {
      if (stopping || ctx->IsCancelled()) return grpc::Status::OK;
      Tick();
      bool all_final = true;
      std::vector<pb::WatchStorageJobsResponse> out;
      for (const auto& id : req->job_ids()) {
        auto it = jobs.find(id);
        if (it == jobs.end()) continue;
        const Job& j = it->second;
        if (j.status != pb::JOB_STATUS_SUCCESS && j.status != pb::JOB_STATUS_FAILED &&
            j.status != pb::JOB_STATUS_CANCELED) {
          all_final = false;
        }
        auto s = sent.find(id);
        if (s != sent.end() && s->second == j.status) continue;
        sent[id] = j.status;
        out.emplace_back();
        FillJob(j, out.back().mutable_storage_job());
      }
      lk.unlock();
      for (const auto& r : out) {
        if (!writer->Write(r)) return grpc::Status::OK;
      }
      lk.lock();
      if (all_final) return grpc::Status::OK;
      cv.wait_for(lk, std::chrono::milliseconds(20));
    }
  }

  void ProxyRoutes() {
    auto authed = [this](const httplib::Request& req, httplib::Response& res) {
      std::lock_guard lk(mu);
      ++counters.proxy_requests;
      std::string t = req.get_header_value("x-ipfs-ffs-auth");
      if (t.empty() || !ValidToken(t)) {
        ++counters.denied;
        res.status = 403;
        res.set_content("forbidden: missing or invalid x-ipfs-ffs-auth", "text/plain");
        return false;
      }
      return true;
    };
    auto kubo_error = [](httplib::Response& res, int status, const std::string& msg) {
      res.status = status;
      std::string esc;
      for (char c : msg) esc += (c == '"' || c == '\\') ? std::string("\\") + c : std::string(1, c);
      res.set_content("{\"Message\":\"" + esc + "\",\"Code\":0,\"Type\":\"error\"}",
                      "application/json");
    };
    http.Post("/api/v0/version", [=](const httplib::Request& req, httplib::Response& res) {
      if (!authed(req, res)) return;
      res.set_content("{\"Version\":\"0.12.2\",\"Commit\":\"fake-powergate\"}", "application/json");
    });
    http.Post("/api/v0/block/get", [=, this](const httplib::Request& req, httplib::Response& res) {
      if (!authed(req, res)) return;
      auto cid = mf::Cid::Parse(req.get_param_value("arg"));
      if (!cid.ok()) return kubo_error(res, 400, "invalid cid: " + cid.error().message());
      std::lock_guard lk(mu);
      for (const auto& [k, o] : objects) {
        if (!o.hot) continue;
        auto b = o.blocks.find(cid->multihash());
        if (b == o.blocks.end()) continue;
        std::string body(reinterpret_cast<const char*>(b->second.data().data()), b->second.size());
        if (data_mode == DataMode::kCorrupt && !body.empty()) body[body.size() / 2] ^= 0x5a;
        if (data_mode == DataMode::kTruncated) body.resize(body.size() / 2);
        res.set_content(body, "application/octet-stream");
        return;
      }
      kubo_error(res, 500,
                 "block was not found locally (offline): ipld: could not find " + cid->ToString());
    });
    http.Post("/api/v0/cat", [=, this](const httplib::Request& req, httplib::Response& res) {
      if (!authed(req, res)) return;
      std::lock_guard lk(mu);
      auto it = objects.find(req.get_param_value("arg"));
      if (it == objects.end() || !it->second.hot) {
        return kubo_error(res, 500, "cid not found in hot storage");
      }
      const Bytes& d = it->second.data;
      uint64_t off = req.has_param("offset") ? std::stoull(req.get_param_value("offset")) : 0;
      off = std::min<uint64_t>(off, d.size());
      uint64_t len =
          req.has_param("length") ? std::stoull(req.get_param_value("length")) : d.size() - off;
      len = std::min<uint64_t>(len, d.size() - off);
      res.set_content(std::string(reinterpret_cast<const char*>(d.data()) + off, len),
                      "application/octet-stream");
    });
  }
};

FakePowergate::FakePowergate(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Result<std::unique_ptr<FakePowergate>> FakePowergate::Start(FakePowergateOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->opts = options;
  impl->thaw_time = options.thaw_time;
  impl->profile = IPFLY_TRY(unixfs::ImportProfile::ByName(options.profile));
  grpc::ServerBuilder builder;
  std::shared_ptr<grpc::ServerCredentials> creds = grpc::InsecureServerCredentials();
  if (!options.tls_cert_pem.empty() && !options.tls_key_pem.empty()) {
    grpc::SslServerCredentialsOptions ssl;
    ssl.pem_key_cert_pairs.push_back({options.tls_key_pem, options.tls_cert_pem});
    creds = grpc::SslServerCredentials(ssl);
  }
  builder.AddListeningPort("127.0.0.1:" + std::to_string(options.grpc_port), creds,
                           &impl->grpc_port);
  builder.RegisterService(impl.get());
  impl->server = builder.BuildAndStart();
  if (!impl->server || impl->grpc_port == 0) {
    return Unavailable("fake powergate: cannot listen on 127.0.0.1:" +
                       std::to_string(options.grpc_port));
  }
  if (options.http_proxy) {
    impl->ProxyRoutes();
    // Idle keep-alive connections hold a server thread until this passes, also at shutdown.
    impl->http.set_keep_alive_timeout(1);
    if (options.http_port) {
      if (!impl->http.bind_to_port("127.0.0.1", options.http_port)) {
        return Unavailable("fake powergate: cannot bind the IPFS proxy");
      }
      impl->http_port = options.http_port;
    } else {
      impl->http_port = impl->http.bind_to_any_port("127.0.0.1");
    }
    if (impl->http_port <= 0) return Unavailable("fake powergate: cannot bind the IPFS proxy");
    Impl* p = impl.get();
    impl->http_thread = std::thread([p] { p->http.listen_after_bind(); });
  }
  Impl* p = impl.get();
  impl->ticker = std::thread([p] {
    std::unique_lock lk(p->mu);
    while (!p->stopping) {
      if (p->Tick()) p->cv.notify_all();
      p->cv.wait_for(lk, std::chrono::milliseconds(5));
    }
  });
  return std::unique_ptr<FakePowergate>(new FakePowergate(std::move(impl)));
}

FakePowergate::~FakePowergate() {
  {
    std::lock_guard lk(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  impl_->server->Wait();
  if (impl_->http_thread.joinable()) {
    impl_->http.stop();
    impl_->http_thread.join();
  }
  impl_->ticker.join();
}

std::string FakePowergate::address() const {
  return "127.0.0.1:" + std::to_string(impl_->grpc_port);
}

std::string FakePowergate::proxy_url() const {
  if (!impl_->http_port) return "";
  return "http://127.0.0.1:" + std::to_string(impl_->http_port);
}

Result<mf::Cid> FakePowergate::AddObject(ByteView data, bool hot, bool cold) {
  MapSink sink;
  auto node = IPFLY_TRY(unixfs::ImportBytes(data, impl_->profile, &sink));
  std::lock_guard lk(impl_->mu);
  Object& o = impl_->objects[node.cid.ToString()];
  o.data.assign(data.begin(), data.end());
  o.blocks = std::move(sink.blocks);
  o.hot = hot;
  o.cold = cold;
  return node.cid;
}

Status FakePowergate::SetState(const mf::Cid& cid, bool hot, bool cold) {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->objects.find(cid.ToString());
  if (it == impl_->objects.end()) return NotFound("fake powergate: no object " + cid.ToString());
  it->second.hot = hot;
  it->second.cold = cold;
  return OkStatus();
}

bool FakePowergate::IsHot(const mf::Cid& cid) const {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->objects.find(cid.ToString());
  return it != impl_->objects.end() && it->second.hot;
}

void FakePowergate::SetNetwork(NetworkFetch fetch) {
  std::lock_guard lk(impl_->mu);
  impl_->network = std::move(fetch);
}

std::optional<FakePowergate::ObjectInfo> FakePowergate::Inspect(const std::string& cid) const {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->objects.find(cid);
  if (it == impl_->objects.end()) return std::nullopt;
  const auto& o = it->second;
  ObjectInfo info;
  info.hot = o.hot;
  info.cold = o.cold;
  info.staged = o.staged;
  info.has_config = o.has_config;
  info.config_hot = o.config.hot().enabled();
  info.config_cold = o.config.cold().enabled();
  return info;
}

std::vector<std::string> FakePowergate::StagedCids() const {
  std::lock_guard lk(impl_->mu);
  return impl_->staged_log;
}

void FakePowergate::SetDataMode(DataMode mode) {
  std::lock_guard lk(impl_->mu);
  impl_->data_mode = mode;
}

void FakePowergate::SetThawMode(ThawMode mode, std::string fail_cause) {
  std::lock_guard lk(impl_->mu);
  impl_->thaw_mode = mode;
  impl_->thaw_fail_cause = std::move(fail_cause);
}

void FakePowergate::SetThawTime(std::chrono::milliseconds t) {
  std::lock_guard lk(impl_->mu);
  impl_->thaw_time = t;
}

Status FakePowergate::CompleteJob(const std::string& job_id) {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->jobs.find(job_id);
  if (it == impl_->jobs.end()) return NotFound("fake powergate: no job " + job_id);
  impl_->Finish(it->second, true, "");
  impl_->cv.notify_all();
  return OkStatus();
}

Status FakePowergate::FailJob(const std::string& job_id, const std::string& cause) {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->jobs.find(job_id);
  if (it == impl_->jobs.end()) return NotFound("fake powergate: no job " + job_id);
  impl_->Finish(it->second, false, cause);
  impl_->cv.notify_all();
  return OkStatus();
}

Status FakePowergate::CancelJob(const std::string& job_id) {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->jobs.find(job_id);
  if (it == impl_->jobs.end()) return NotFound("fake powergate: no job " + job_id);
  it->second.status = pb::JOB_STATUS_CANCELED;
  it->second.cause = "canceled by user";
  impl_->cv.notify_all();
  return OkStatus();
}

std::vector<std::string> FakePowergate::JobIds() const {
  std::lock_guard lk(impl_->mu);
  std::vector<std::string> out;
  for (const auto& [id, j] : impl_->jobs) out.push_back(id);
  return out;
}

std::string FakePowergate::JobState(const std::string& job_id) const {
  std::lock_guard lk(impl_->mu);
  auto it = impl_->jobs.find(job_id);
  if (it == impl_->jobs.end()) return "";
  switch (it->second.status) {
    case pb::JOB_STATUS_QUEUED:
      return "QUEUED";
    case pb::JOB_STATUS_EXECUTING:
      return "EXECUTING";
    case pb::JOB_STATUS_FAILED:
      return "FAILED";
    case pb::JOB_STATUS_CANCELED:
      return "CANCELED";
    case pb::JOB_STATUS_SUCCESS:
      return "SUCCESS";
    default:
      return "UNSPECIFIED";
  }
}

FakePowergate::Counters FakePowergate::counters() const {
  std::lock_guard lk(impl_->mu);
  return impl_->counters;
}

}  // namespace ipfly::testing
