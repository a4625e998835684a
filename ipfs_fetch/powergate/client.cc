#include "ipfs_fetch/powergate/client.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>

namespace ipfly::fetch::powergate {
namespace {

bool Contains(std::string_view hay, std::string_view needle) {
  return hay.find(needle) != std::string_view::npos;
}

}  // namespace

std::string_view JobStatusName(pb::JobStatus s) {
  switch (s) {
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

pb::JobStatus JobStatusFromName(std::string_view name) {
  for (pb::JobStatus s : {pb::JOB_STATUS_QUEUED, pb::JOB_STATUS_EXECUTING, pb::JOB_STATUS_FAILED,
                          pb::JOB_STATUS_CANCELED, pb::JOB_STATUS_SUCCESS}) {
    if (JobStatusName(s) == name) return s;
  }
  return pb::JOB_STATUS_UNSPECIFIED;
}

bool IsFinal(pb::JobStatus s) {
  return s == pb::JOB_STATUS_FAILED || s == pb::JOB_STATUS_CANCELED || s == pb::JOB_STATUS_SUCCESS;
}

void CallCanceller::Cancel() {
  std::lock_guard lk(mu_);
  cancelled_ = true;
  if (ctx_) ctx_->TryCancel();
}

bool CallCanceller::cancelled() const {
  std::lock_guard lk(mu_);
  return cancelled_;
}

bool CallCanceller::Attach(grpc::ClientContext* ctx) {
  std::lock_guard lk(mu_);
  if (cancelled_) return false;
  ctx_ = ctx;
  return true;
}

void CallCanceller::Detach() {
  std::lock_guard lk(mu_);
  ctx_ = nullptr;
}

Error MapGrpcStatus(int code, std::string_view message, std::string_view context) {
  std::string msg = std::string(context) + ": " + std::string(message);
  switch (static_cast<grpc::StatusCode>(code)) {
    case grpc::StatusCode::PERMISSION_DENIED:
    case grpc::StatusCode::UNAUTHENTICATED:
      return Error(Errc::kPermissionDenied, msg);
    case grpc::StatusCode::NOT_FOUND:
      return NotFound(msg);
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return Timeout(msg);
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
    case grpc::StatusCode::ABORTED:
      return Unavailable(msg);
    case grpc::StatusCode::CANCELLED:
      return Error(Errc::kCancelled, msg);
    case grpc::StatusCode::INVALID_ARGUMENT:
    case grpc::StatusCode::OUT_OF_RANGE:
      return InvalidArgument(msg);
    case grpc::StatusCode::FAILED_PRECONDITION:
      return Error(Errc::kFailedPrecondition, msg);
    case grpc::StatusCode::UNIMPLEMENTED:
      return Error(Errc::kUnimplemented, msg);
    case grpc::StatusCode::UNKNOWN:
      // Powergate returns most errors as plain Go errors, i.e. UNKNOWN with a message.
      if (Contains(message, "disabled in hot storage")) {
        return Error(Errc::kFailedPrecondition, msg);
      }
      if (Contains(message, "not found")) return NotFound(msg);
      return Internal(msg);
    default:
      return Internal(msg);
  }
}

Client::Client(ClientOptions options) : options_(std::move(options)) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (options_.tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options_.tls_ca_pem;
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(16 << 20);
  channel_ = grpc::CreateCustomChannel(options_.address, creds, args);
  stub_ = pb::UserService::NewStub(channel_);
}

Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::FromConfig(const PowergateConfig& config) {
  if (config.address.empty()) return InvalidArgument("[powergate] address is not set");
  ClientOptions o;
  o.address = config.address;
  o.token = config.token;
  if (o.token.empty() && !config.token_env.empty()) {
    if (const char* v = std::getenv(config.token_env.c_str())) o.token = v;
  }
  o.tls = config.tls;
  if (config.tls && !config.tls_ca.empty()) {
    std::ifstream in(config.tls_ca, std::ios::binary);
    if (!in) return IoError("[powergate] tls_ca: cannot read " + config.tls_ca);
    std::ostringstream ss;
    ss << in.rdbuf();
    o.tls_ca_pem = ss.str();
  }
  return std::make_unique<Client>(std::move(o));
}

void Client::Prepare(grpc::ClientContext* ctx, Deadline deadline,
                     std::chrono::milliseconds cap) const {
  Deadline d = std::min(deadline, Clock::now() + cap);
  // gRPC wants a system_clock deadline.
  auto left = d - Clock::now();
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::duration_cast<std::chrono::system_clock::duration>(left));
  if (!options_.token.empty()) ctx->AddMetadata(std::string(kTokenMetadata), options_.token);
}

Error Client::Map(const grpc::Status& s, std::string_view what) const {
  return MapGrpcStatus(s.error_code(), s.error_message(),
                       "powergate " + options_.address + ": " + std::string(what));
}

Result<pb::CidInfo> Client::CidInfo(const std::string& cid, Deadline deadline) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline, options_.call_timeout);
  pb::CidInfoRequest req;
  req.set_cid(cid);
  pb::CidInfoResponse resp;
  grpc::Status s = stub_->CidInfo(&ctx, req, &resp);
  if (!s.ok()) return Map(s, "CidInfo " + cid);
  return resp.cid_info();
}

Result<pb::StorageConfig> Client::DefaultStorageConfig(Deadline deadline) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline, options_.call_timeout);
  pb::DefaultStorageConfigRequest req;
  pb::DefaultStorageConfigResponse resp;
  grpc::Status s = stub_->DefaultStorageConfig(&ctx, req, &resp);
  if (!s.ok()) return Map(s, "DefaultStorageConfig");
  return resp.default_storage_config();
}

Status Client::StageCid(const std::string& cid, Deadline deadline) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline, options_.call_timeout);
  pb::StageCidRequest req;
  req.set_cid(cid);
  pb::StageCidResponse resp;
  grpc::Status s = stub_->StageCid(&ctx, req, &resp);
  if (!s.ok()) return Map(s, "StageCid " + cid);
  return OkStatus();
}

Result<std::string> Client::ApplyStorageConfig(const std::string& cid,
                                               const pb::StorageConfig& config,
                                               bool override_config, Deadline deadline) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline, options_.call_timeout);
  pb::ApplyStorageConfigRequest req;
  req.set_cid(cid);
  *req.mutable_config() = config;
  req.set_has_config_flag(true);
  if (override_config) {
    req.set_override_config(true);
    req.set_has_override_config(true);
  }
  pb::ApplyStorageConfigResponse resp;
  grpc::Status s = stub_->ApplyStorageConfig(&ctx, req, &resp);
  if (!s.ok()) return Map(s, "ApplyStorageConfig " + cid);
  if (resp.job_id().empty()) {
    return Internal("powergate " + options_.address + ": ApplyStorageConfig " + cid +
                    " returned no job id");
  }
  return resp.job_id();
}

Result<pb::StorageJob> Client::StorageJob(const std::string& job_id, Deadline deadline) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline, options_.call_timeout);
  pb::StorageJobRequest req;
  req.set_job_id(job_id);
  pb::StorageJobResponse resp;
  grpc::Status s = stub_->StorageJob(&ctx, req, &resp);
  if (!s.ok()) return Map(s, "StorageJob " + job_id);
  return resp.storage_job();
}

Status Client::WatchStorageJobs(const std::vector<std::string>& job_ids, Deadline deadline,
                                const std::function<bool(const pb::StorageJob&)>& on_update,
                                CallCanceller* canceller) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline, options_.stream_timeout);
  if (canceller && !canceller->Attach(&ctx)) return Error(Errc::kCancelled, "watch cancelled");
  pb::WatchStorageJobsRequest req;
  for (const auto& id : job_ids) req.add_job_ids(id);
  auto reader = stub_->WatchStorageJobs(&ctx, req);
  pb::WatchStorageJobsResponse resp;
  bool stopped = false;
  while (reader->Read(&resp)) {
    if (!on_update(resp.storage_job())) {
      stopped = true;
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (canceller) canceller->Detach();
  if (stopped || s.ok()) return OkStatus();
  return Map(s, "WatchStorageJobs");
}

Status Client::Get(const std::string& cid, Deadline deadline,
                   const std::function<Status(ByteView)>& on_chunk, CallCanceller* canceller) {
  grpc::ClientContext ctx;
  Prepare(&ctx, deadline, options_.stream_timeout);
  if (canceller && !canceller->Attach(&ctx)) return Error(Errc::kCancelled, "get cancelled");
  pb::GetRequest req;
  req.set_cid(cid);
  auto reader = stub_->Get(&ctx, req);
  pb::GetResponse resp;
  Status consumer = OkStatus();
  while (reader->Read(&resp)) {
    const std::string& c = resp.chunk();
    consumer = on_chunk(ByteView(reinterpret_cast<const uint8_t*>(c.data()), c.size()));
    if (!consumer.ok()) {
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status s = reader->Finish();
  if (canceller) canceller->Detach();
  if (!consumer.ok()) return consumer;
  if (!s.ok()) return Map(s, "Get " + cid);
  return OkStatus();
}

}  // namespace ipfly::fetch::powergate
