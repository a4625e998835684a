#include "snapshotter/grpc_server.h"

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <mutex>
#include <system_error>

#include "core/base/log.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"

namespace ipfly::snapshotter {
namespace fs = std::filesystem;
namespace api = containerd::services::snapshots::v1;

grpc::Status ToGrpcStatus(const Error& e) {
  grpc::StatusCode c;
  switch (e.code()) {
    case Errc::kInvalidArgument:
      c = grpc::StatusCode::INVALID_ARGUMENT;
      break;
    case Errc::kNotFound:
      c = grpc::StatusCode::NOT_FOUND;
      break;
    case Errc::kAlreadyExists:
      c = grpc::StatusCode::ALREADY_EXISTS;
      break;
    case Errc::kFailedPrecondition:
      c = grpc::StatusCode::FAILED_PRECONDITION;
      break;
    case Errc::kUnavailable:
      c = grpc::StatusCode::UNAVAILABLE;
      break;
    case Errc::kUnimplemented:
      c = grpc::StatusCode::UNIMPLEMENTED;
      break;
    case Errc::kCancelled:
      c = grpc::StatusCode::CANCELLED;
      break;
    case Errc::kTimeout:
      c = grpc::StatusCode::DEADLINE_EXCEEDED;
      break;
    default:
      c = grpc::StatusCode::UNKNOWN;
  }
  return {c, e.message()};
}

namespace {

const char* CodeName(grpc::StatusCode c) {
  switch (c) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "InvalidArgument";
    case grpc::StatusCode::NOT_FOUND:
      return "NotFound";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "AlreadyExists";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FailedPrecondition";
    case grpc::StatusCode::UNAVAILABLE:
      return "Unavailable";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "Unimplemented";
    case grpc::StatusCode::CANCELLED:
      return "Canceled";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DeadlineExceeded";
    default:
      return "Unknown";
  }
}

Labels ToLabels(const google::protobuf::Map<std::string, std::string>& m) {
  return Labels(m.begin(), m.end());
}

void SetTimestamp(int64_t ns, google::protobuf::Timestamp* ts) {
  ts->set_seconds(ns / 1'000'000'000);
  ts->set_nanos(static_cast<int32_t>(ns % 1'000'000'000));
}

void FillInfo(const SnapshotRecord& r, api::Info* info) {
  info->set_name(r.key);
  info->set_parent(r.parent);
  info->set_kind(static_cast<api::Kind>(static_cast<int>(r.kind)));
  SetTimestamp(r.created_ns, info->mutable_created_at());
  SetTimestamp(r.updated_ns, info->mutable_updated_at());
  auto* labels = info->mutable_labels();
  for (const auto& [k, v] : r.labels) (*labels)[k] = v;
}

template <typename Resp>
void FillMounts(const std::vector<MountSpec>& mounts, Resp* resp) {
  for (const auto& m : mounts) {
    auto* pm = resp->add_mounts();
    pm->set_type(m.type);
    pm->set_source(m.source);
    for (const auto& o : m.options) pm->add_options(o);
  }
}

class Service final : public api::Snapshots::Service {
 public:
  explicit Service(SnapshotService* s) : s_(s) {}

  grpc::Status Prepare(grpc::ServerContext*, const api::PrepareSnapshotRequest* req,
                       api::PrepareSnapshotResponse* resp) override {
    IPFLY_LOG_DEBUG("rpc Prepare key={} parent={}", req->key(), req->parent());
    auto r = s_->Prepare(req->key(), req->parent(), ToLabels(req->labels()));
    if (!r.ok()) return Done("Prepare", ToGrpcStatus(r.error()));
    FillMounts(*r, resp);
    return Done("Prepare", grpc::Status::OK);
  }

  grpc::Status View(grpc::ServerContext*, const api::ViewSnapshotRequest* req,
                    api::ViewSnapshotResponse* resp) override {
    IPFLY_LOG_DEBUG("rpc View key={} parent={}", req->key(), req->parent());
    auto r = s_->View(req->key(), req->parent(), ToLabels(req->labels()));
    if (!r.ok()) return Done("View", ToGrpcStatus(r.error()));
    FillMounts(*r, resp);
    return Done("View", grpc::Status::OK);
  }

  grpc::Status Mounts(grpc::ServerContext*, const api::MountsRequest* req,
                      api::MountsResponse* resp) override {
    auto r = s_->Mounts(req->key());
    if (!r.ok()) return Done("Mounts", ToGrpcStatus(r.error()));
    FillMounts(*r, resp);
    return Done("Mounts", grpc::Status::OK);
  }

  grpc::Status Commit(grpc::ServerContext*, const api::CommitSnapshotRequest* req,
                      google::protobuf::Empty*) override {
    IPFLY_LOG_DEBUG("rpc Commit name={} key={}", req->name(), req->key());
    auto st = s_->Commit(req->name(), req->key(), ToLabels(req->labels()));
    return Done("Commit", st.ok() ? grpc::Status::OK : ToGrpcStatus(st.error()));
  }

  grpc::Status Remove(grpc::ServerContext*, const api::RemoveSnapshotRequest* req,
                      google::protobuf::Empty*) override {
    IPFLY_LOG_DEBUG("rpc Remove key={}", req->key());
    auto st = s_->Remove(req->key());
    return Done("Remove", st.ok() ? grpc::Status::OK : ToGrpcStatus(st.error()));
  }

  grpc::Status Stat(grpc::ServerContext*, const api::StatSnapshotRequest* req,
                    api::StatSnapshotResponse* resp) override {
    auto r = s_->Stat(req->key());
    if (!r.ok()) return Done("Stat", ToGrpcStatus(r.error()));
    FillInfo(*r, resp->mutable_info());
    return Done("Stat", grpc::Status::OK);
  }

  grpc::Status Update(grpc::ServerContext*, const api::UpdateSnapshotRequest* req,
                      api::UpdateSnapshotResponse* resp) override {
    std::vector<std::string> paths(req->update_mask().paths().begin(),
                                   req->update_mask().paths().end());
    auto r = s_->Update(req->info().name(), ToLabels(req->info().labels()), paths);
    if (!r.ok()) return Done("Update", ToGrpcStatus(r.error()));
    FillInfo(*r, resp->mutable_info());
    return Done("Update", grpc::Status::OK);
  }

  grpc::Status List(grpc::ServerContext* ctx, const api::ListSnapshotsRequest* req,
                    grpc::ServerWriter<api::ListSnapshotsResponse>* writer) override {
    std::vector<std::string> filters(req->filters().begin(), req->filters().end());
    api::ListSnapshotsResponse batch;
    auto flush = [&]() -> Status {
      if (batch.info_size() == 0) return OkStatus();
      if (!writer->Write(batch)) return Error(Errc::kCancelled, "client went away");
      batch.Clear();
      return OkStatus();
    };
    auto st = s_->Walk(filters, [&](const SnapshotRecord& r) -> Status {
      if (ctx->IsCancelled()) return Error(Errc::kCancelled, "cancelled");
      FillInfo(r, batch.add_info());
      if (batch.info_size() >= 100) return flush();
      return OkStatus();
    });
    if (st.ok()) st = flush();
    return Done("List", st.ok() ? grpc::Status::OK : ToGrpcStatus(st.error()));
  }

  grpc::Status Usage(grpc::ServerContext*, const api::UsageRequest* req,
                     api::UsageResponse* resp) override {
    auto r = s_->Usage(req->key());
    if (!r.ok()) return Done("Usage", ToGrpcStatus(r.error()));
    resp->set_size(r->size);
    resp->set_inodes(r->inodes);
    return Done("Usage", grpc::Status::OK);
  }

  grpc::Status Cleanup(grpc::ServerContext*, const api::CleanupRequest*,
                       google::protobuf::Empty*) override {
    auto st = s_->Cleanup();
    return Done("Cleanup", st.ok() ? grpc::Status::OK : ToGrpcStatus(st.error()));
  }

 private:
  grpc::Status Done(const char* method, grpc::Status st) {
    s_->metrics().CountRpc(method, CodeName(st.error_code()));
    if (!st.ok() && st.error_code() != grpc::StatusCode::NOT_FOUND &&
        st.error_code() != grpc::StatusCode::ALREADY_EXISTS) {
      IPFLY_LOG_INFO("rpc {} failed: {} ({})", method, st.error_message(),
                     CodeName(st.error_code()));
    }
    return st;
  }

  SnapshotService* s_;
};

}  // namespace

struct GrpcServer::Impl {
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
  std::once_flag shutdown_once;
  std::string socket_path;
};

Result<std::unique_ptr<GrpcServer>> GrpcServer::Start(const std::string& socket_path,
                                                      SnapshotService* service) {
  if (socket_path.empty()) return InvalidArgument("snapshotter socket path is empty");
  std::error_code ec;
  fs::path parent = fs::path(socket_path).parent_path();
  if (!parent.empty()) {
    fs::create_directories(parent, ec);
    if (ec) return IoError("create " + parent.string() + ": " + ec.message());
  }
  struct stat st {};
  if (::lstat(socket_path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return InvalidArgument(socket_path + " exists and is not a socket");
    }
    ::unlink(socket_path.c_str());  // stale socket of a previous run
  }
  auto s = std::unique_ptr<GrpcServer>(new GrpcServer);
  s->impl_ = std::make_unique<Impl>();
  s->impl_->socket_path = socket_path;
  s->impl_->service = std::make_unique<Service>(service);
  grpc::ServerBuilder b;
  b.AddListeningPort("unix:" + socket_path, grpc::InsecureServerCredentials());
  b.RegisterService(s->impl_->service.get());
  b.SetMaxReceiveMessageSize(16 << 20);
  // The socket is created with the process umask: make it root-only from the start.
  mode_t old = ::umask(0077);
  s->impl_->server = b.BuildAndStart();
  ::umask(old);
  if (!s->impl_->server) return Unavailable("cannot listen on unix:" + socket_path);
  ::chmod(socket_path.c_str(), 0600);
  IPFLY_LOG_INFO("snapshotter: serving containerd.services.snapshots.v1 on {}", socket_path);
  return s;
}

void GrpcServer::Shutdown() {
  if (!impl_ || !impl_->server) return;
  std::call_once(impl_->shutdown_once, [this] {
    impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
    impl_->server->Wait();
    ::unlink(impl_->socket_path.c_str());
  });
}

GrpcServer::~GrpcServer() { Shutdown(); }

}  // namespace ipfly::snapshotter
