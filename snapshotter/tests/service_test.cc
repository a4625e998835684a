// The snapshot service through a real gRPC channel on a temporary unix socket, with a test
// LazyLayers that serves plain directories (the FUSE implementation has its own tests).
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"
#include "snapshotter/grpc_server.h"
#include "snapshotter/metrics.h"
#include "snapshotter/snapshot_service.h"
#include "tests/support/process.h"

namespace ipfly::snapshotter {
namespace {

namespace api = containerd::services::snapshots::v1;
namespace fs = std::filesystem;
using ipfly::testing::ReadFile;
using ipfly::testing::TempDir;

constexpr const char* kCidLabel = "containerd.io/snapshot/ipfly.cid";

// Serves <dir>/<id> for layers whose labels carry kCidLabel; scripted failures.
class DirLazyLayers : public LazyLayers {
 public:
  explicit DirLazyLayers(std::string dir) : dir_(std::move(dir)) {}

  Result<RemoteLayer> Resolve(const Labels& labels) override {
    resolves++;
    auto it = labels.find(kCidLabel);
    if (it == labels.end()) return NotFound("no ipfly labels");
    if (it->second == "unseekable") {
      return Error(Errc::kFailedPrecondition, "not seekable: single-frame zstd");
    }
    if (it->second == "tiny") return Error(Errc::kFailedPrecondition, "too small: 10 bytes");
    if (it->second == "down") return Unavailable("resolver down");
    RemoteLayer l;
    l.blob_cid = it->second;
    l.index_cid = "idx-" + it->second;
    l.digest = "sha256:" + it->second;
    l.size = 1000;
    l.resolved_by = "ipfly-labels";
    return l;
  }
  Result<std::string> Attach(const std::string& id, const RemoteLayer& layer) override {
    if (layer.blob_cid == "noattach") return IoError("attach failed");
    std::lock_guard lk(mu_);
    std::string d = dir_ + "/" + id;
    fs::create_directories(d + "/etc");
    std::ofstream(d + "/etc/layer") << layer.blob_cid << "\n";
    attached_[id] = layer;
    return d;
  }
  Result<std::string> EnsureAttached(const std::string& id, const RemoteLayer& layer) override {
    ensures++;
    if (broken) return Unavailable("FUSE mount is dead");
    return Attach(id, layer);
  }
  Status Detach(const std::string& id) override {
    std::lock_guard lk(mu_);
    detached.insert(id);
    if (!attached_.erase(id)) return NotFound("not attached");
    return OkStatus();
  }
  std::vector<LayerStatus> Layers() override {
    std::lock_guard lk(mu_);
    std::vector<LayerStatus> out;
    for (const auto& [id, l] : attached_) {
      out.push_back({id, l, dir_ + "/" + id, 123, l.size, false, 0, in_use_.count(id) > 0});
    }
    return out;
  }

  void SetInUse(const std::set<std::string>& ids) override {
    std::lock_guard lk(mu_);
    in_use_ = ids;
  }
  std::set<std::string> InUse() {
    std::lock_guard lk(mu_);
    return in_use_;
  }

  std::atomic<int> resolves{0}, ensures{0};
  std::atomic<bool> broken{false};
  std::set<std::string> detached;

 private:
  std::mutex mu_;
  std::string dir_;
  std::map<std::string, RemoteLayer> attached_;
  std::set<std::string> in_use_;
};

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    lazy_ = std::make_unique<DirLazyLayers>(tmp_ / "lazy");
    Start();
  }
  void TearDown() override {
    for (auto it = mounted_.rbegin(); it != mounted_.rend(); ++it) ::umount2(it->c_str(), 0);
    Stop();
  }
  void Start(bool with_lazy = true) {
    auto s = SnapshotService::Open(tmp_ / "root", with_lazy ? lazy_.get() : nullptr);
    ASSERT_TRUE(s.ok()) << s.error().ToString();
    service_ = std::move(*s);
    auto g = GrpcServer::Start(tmp_ / "run/snap.sock", service_.get());
    ASSERT_TRUE(g.ok()) << g.error().ToString();
    server_ = std::move(*g);
    stub_ = api::Snapshots::NewStub(grpc::CreateChannel("unix:" + (tmp_ / "run/snap.sock"),
                                                        grpc::InsecureChannelCredentials()));
  }
  void Stop() {
    stub_.reset();
    server_.reset();
    service_.reset();
  }

  grpc::Status Prepare(const std::string& key, const std::string& parent, const Labels& labels,
                       api::PrepareSnapshotResponse* resp = nullptr, bool view = false) {
    grpc::ClientContext ctx;
    api::PrepareSnapshotResponse r;
    if (view) {
      api::ViewSnapshotRequest req;
      req.set_key(key);
      req.set_parent(parent);
      for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
      api::ViewSnapshotResponse vr;
      auto st = stub_->View(&ctx, req, &vr);
      if (resp) resp->mutable_mounts()->CopyFrom(vr.mounts());
      return st;
    }
    api::PrepareSnapshotRequest req;
    req.set_key(key);
    req.set_parent(parent);
    for (const auto& [k, v] : labels) (*req.mutable_labels())[k] = v;
    return stub_->Prepare(&ctx, req, resp ? resp : &r);
  }
  grpc::Status Commit(const std::string& name, const std::string& key) {
    grpc::ClientContext ctx;
    api::CommitSnapshotRequest req;
    req.set_name(name);
    req.set_key(key);
    google::protobuf::Empty e;
    return stub_->Commit(&ctx, req, &e);
  }
  grpc::Status Remove(const std::string& key) {
    grpc::ClientContext ctx;
    api::RemoveSnapshotRequest req;
    req.set_key(key);
    google::protobuf::Empty e;
    return stub_->Remove(&ctx, req, &e);
  }
  grpc::Status Stat(const std::string& key, api::Info* info = nullptr) {
    grpc::ClientContext ctx;
    api::StatSnapshotRequest req;
    req.set_key(key);
    api::StatSnapshotResponse resp;
    auto st = stub_->Stat(&ctx, req, &resp);
    if (info) *info = resp.info();
    return st;
  }
  grpc::Status Mounts(const std::string& key, api::MountsResponse* resp) {
    grpc::ClientContext ctx;
    api::MountsRequest req;
    req.set_key(key);
    return stub_->Mounts(&ctx, req, resp);
  }
  std::vector<api::Info> List(const std::vector<std::string>& filters,
                              grpc::Status* status = nullptr) {
    grpc::ClientContext ctx;
    api::ListSnapshotsRequest req;
    for (const auto& f : filters) req.add_filters(f);
    auto reader = stub_->List(&ctx, req);
    std::vector<api::Info> out;
    api::ListSnapshotsResponse resp;
    while (reader->Read(&resp)) {
      for (const auto& i : resp.info()) out.push_back(i);
    }
    auto st = reader->Finish();
    if (status) *status = st;
    return out;
  }
  // Prepare + write a file + Commit.
  void Layer(const std::string& name, const std::string& parent, const std::string& file) {
    api::PrepareSnapshotResponse r;
    ASSERT_TRUE(Prepare(name + "-active", parent, {}, &r).ok());
    ASSERT_EQ(r.mounts_size(), 1);
    std::string fsdir;
    if (r.mounts(0).type() == "bind") {
      fsdir = r.mounts(0).source();
    } else {
      for (const auto& o : r.mounts(0).options()) {
        if (o.starts_with("upperdir=")) fsdir = o.substr(9);
      }
    }
    ASSERT_FALSE(fsdir.empty());
    std::ofstream(fsdir + "/" + file) << name << "\n";
    ASSERT_TRUE(Commit(name, name + "-active").ok());
  }
  // Mounts `m` (overlay or bind) at a new directory; unmounted in TearDown.
  std::string MountAt(const containerd::types::Mount& m) {
    std::string target = tmp_ / ("mnt" + std::to_string(mounted_.size()));
    fs::create_directories(target);
    std::string opts;
    unsigned long flags = 0;
    for (const auto& o : m.options()) {
      if (o == "ro") {
        flags |= MS_RDONLY;
      } else if (o == "rbind") {
        flags |= MS_BIND | MS_REC;
      } else if (o != "rw") {
        opts += (opts.empty() ? "" : ",") + o;
      }
    }
    int rc = ::mount(m.source().c_str(), target.c_str(), m.type().c_str(), flags,
                     opts.empty() ? nullptr : opts.c_str());
    EXPECT_EQ(rc, 0) << "mount " << m.type() << " " << opts << ": " << strerror(errno);
    if (rc == 0) mounted_.push_back(target);
    return target;
  }

  TempDir tmp_;
  std::unique_ptr<DirLazyLayers> lazy_;
  std::unique_ptr<SnapshotService> service_;
  std::unique_ptr<GrpcServer> server_;
  std::unique_ptr<api::Snapshots::Stub> stub_;
  std::vector<std::string> mounted_;
};

TEST_F(ServiceTest, SocketIsRootOnly) {
  struct stat st {};
  ASSERT_EQ(::stat((tmp_ / "run/snap.sock").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST_F(ServiceTest, OverlayMountsFollowContainerd) {
  api::PrepareSnapshotResponse r;
  ASSERT_TRUE(Prepare("a", "", {}, &r).ok());
  ASSERT_EQ(r.mounts_size(), 1);
  EXPECT_EQ(r.mounts(0).type(), "bind");
  EXPECT_EQ(r.mounts(0).options(0), "rw");
  Layer("l1", "", "one");
  Layer("l2", "l1", "two");

  ASSERT_TRUE(Prepare("c", "l2", {}, &r).ok());
  ASSERT_EQ(r.mounts_size(), 1);
  EXPECT_EQ(r.mounts(0).type(), "overlay");
  std::string lower;
  bool upper = false, work = false;
  for (const auto& o : r.mounts(0).options()) {
    if (o.starts_with("lowerdir=")) lower = o.substr(9);
    upper |= o.starts_with("upperdir=");
    work |= o.starts_with("workdir=");
  }
  EXPECT_TRUE(upper && work);
  api::Info l1, l2;
  ASSERT_TRUE(Stat("l1", &l1).ok());
  EXPECT_EQ(l1.kind(), api::COMMITTED);
  // Nearest parent first.
  std::string root = service_->root();
  EXPECT_TRUE(lower.find("/snapshots/") != std::string::npos);
  auto colon = lower.find(':');
  ASSERT_NE(colon, std::string::npos);
  EXPECT_TRUE(fs::exists(lower.substr(0, colon) + "/two"));
  EXPECT_TRUE(fs::exists(lower.substr(colon + 1) + "/one"));
  std::string mnt = MountAt(r.mounts(0));
  EXPECT_EQ(ReadFile(mnt + "/one"), "l1\n");
  EXPECT_EQ(ReadFile(mnt + "/two"), "l2\n");

  // View with one parent: ro bind of the parent; with several: overlay without upperdir.
  ASSERT_TRUE(Prepare("v1", "l1", {}, &r, /*view=*/true).ok());
  EXPECT_EQ(r.mounts(0).type(), "bind");
  EXPECT_EQ(r.mounts(0).options(0), "ro");
  ASSERT_TRUE(Prepare("v2", "l2", {}, &r, /*view=*/true).ok());
  EXPECT_EQ(r.mounts(0).type(), "overlay");
  for (const auto& o : r.mounts(0).options()) EXPECT_FALSE(o.starts_with("upperdir="));

  api::MountsResponse mr;
  EXPECT_EQ(Mounts("l1", &mr).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(Mounts("v2", &mr).ok());
}

TEST_F(ServiceTest, ErrorCodesContainerdUnderstands) {
  Layer("l1", "", "one");
  EXPECT_EQ(Prepare("l1", "", {}).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Prepare("x", "missing", {}).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(Prepare("act", "l1", {}).ok());
  EXPECT_EQ(Prepare("y", "act", {}).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Remove("l1").error_code(), grpc::StatusCode::FAILED_PRECONDITION);  // has a child
  EXPECT_EQ(Remove("nope").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Stat("nope").error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Commit("l1", "act").error_code(), grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(Commit("z", "l1").error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_EQ(Prepare("big", "", {{"k", std::string(5000, 'v')}}).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  // (invalid UTF-8 cannot even cross gRPC as a proto3 string; the service checks it too)
  EXPECT_EQ(service_->Prepare("utf", "", {{"k", "\xff\xfe"}}).error().code(),
            Errc::kInvalidArgument);
  grpc::Status st;
  List({"kind=="}, &st);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  {
    grpc::ClientContext ctx;
    api::UpdateSnapshotRequest req;
    req.mutable_info()->set_name("l1");
    req.mutable_update_mask()->add_paths("parent");
    api::UpdateSnapshotResponse resp;
    EXPECT_EQ(stub_->Update(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    grpc::ClientContext ctx;
    api::UpdateSnapshotRequest req;
    req.mutable_info()->set_name("l1");
    (*req.mutable_info()->mutable_labels())["a"] = "b";
    req.mutable_update_mask()->add_paths("labels.a");
    api::UpdateSnapshotResponse resp;
    ASSERT_TRUE(stub_->Update(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.info().labels().at("a"), "b");
  }
  ASSERT_TRUE(Remove("act").ok());
  ASSERT_TRUE(Remove("l1").ok());
}

TEST_F(ServiceTest, UsageAndCleanup) {
  api::PrepareSnapshotResponse r;
  ASSERT_TRUE(Prepare("a", "", {}, &r).ok());
  std::string fsdir = r.mounts(0).source();
  testing::WriteRandomFile(fsdir + "/data", 100'000, 1);
  {
    grpc::ClientContext ctx;
    api::UsageRequest req;
    req.set_key("a");
    api::UsageResponse resp;
    ASSERT_TRUE(stub_->Usage(&ctx, req, &resp).ok());
    EXPECT_GE(resp.size(), 100'000);
    EXPECT_EQ(resp.inodes(), 2);
  }
  ASSERT_TRUE(Commit("c", "a").ok());
  {
    grpc::ClientContext ctx;
    api::UsageRequest req;
    req.set_key("c");
    api::UsageResponse resp;
    ASSERT_TRUE(stub_->Usage(&ctx, req, &resp).ok());
    EXPECT_GE(resp.size(), 100'000);
  }
  // A directory no snapshot refers to (e.g. left by a crash) goes away on Cleanup.
  std::string stray = service_->root() + "/snapshots/9999";
  fs::create_directories(stray + "/fs");
  fs::create_directories(service_->root() + "/snapshots/new-abc123");
  grpc::ClientContext ctx;
  google::protobuf::Empty e;
  ASSERT_TRUE(stub_->Cleanup(&ctx, api::CleanupRequest(), &e).ok());
  EXPECT_FALSE(fs::exists(stray));
  EXPECT_FALSE(fs::exists(service_->root() + "/snapshots/new-abc123"));
  EXPECT_TRUE(fs::exists(fsdir + "/data"));
}

TEST_F(ServiceTest, ListWithFilters) {
  Layer("l1", "", "one");
  Layer("l2", "l1", "two");
  ASSERT_TRUE(Prepare("act", "l2", {{"team", "x y"}}).ok());
  EXPECT_EQ(List({}).size(), 3u);
  EXPECT_EQ(List({"kind==committed"}).size(), 2u);
  EXPECT_EQ(List({"parent==l1"}).size(), 1u);
  auto v = List({R"(labels.team=="x y")"});
  ASSERT_EQ(v.size(), 1u);
  EXPECT_EQ(v[0].name(), "act");
  EXPECT_EQ(v[0].kind(), api::ACTIVE);
  EXPECT_EQ(v[0].parent(), "l2");
  EXPECT_GT(v[0].created_at().seconds(), 1'600'000'000);
  EXPECT_EQ(List({"name==l1", "name==l2"}).size(), 2u);  // OR of filter strings
  EXPECT_EQ(List({"name~=^l", "kind!=committed"}).size(), 3u);
  EXPECT_EQ(List({"name~=^l,kind!=committed"}).size(), 0u);
  // More than one response batch.
  for (int i = 0; i < 230; ++i) ASSERT_TRUE(Prepare("many-" + std::to_string(i), "", {}).ok());
  EXPECT_EQ(List({"name~=^many-"}).size(), 230u);
}

TEST_F(ServiceTest, LazyLayerIsCommittedAndFoundByContainerdsQuery) {
  Layer("base", "", "one");
  Labels labels{{kSnapshotRefLabel, "sha256:chain2"}, {kCidLabel, "bafylayer"}};
  // Exactly the remote-snapshotter protocol: Prepare -> ALREADY_EXISTS -> List by ref + parent.
  EXPECT_EQ(Prepare("default/5/extract-1 sha256:chain2", "base", labels).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  auto found = List({R"(labels."containerd.io/snapshot.ref"==sha256:chain2,parent=="base")"});
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].name(), "sha256:chain2");
  EXPECT_EQ(found[0].kind(), api::COMMITTED);
  EXPECT_EQ(found[0].labels().at(kCidLabel), "bafylayer");
  EXPECT_EQ(service_->metrics().lazy_mounts(), 1u);
  EXPECT_FALSE(fs::exists(tmp_ / "root/snapshots/extract"));
  // The extract key itself was never created.
  EXPECT_EQ(Stat("default/5/extract-1 sha256:chain2").error_code(), grpc::StatusCode::NOT_FOUND);

  // Again: the committed snapshot exists, so no new resolve.
  int resolves = lazy_->resolves;
  EXPECT_EQ(Prepare("default/6/extract-2 sha256:chain2", "base", labels).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  EXPECT_EQ(lazy_->resolves, resolves);

  // A container on top: overlay whose lowerdirs are the lazy dir, then base.
  api::PrepareSnapshotResponse r;
  ASSERT_TRUE(Prepare("default/7/c1", "sha256:chain2", {}, &r).ok());
  ASSERT_EQ(r.mounts(0).type(), "overlay");
  std::string mnt = MountAt(r.mounts(0));
  EXPECT_EQ(ReadFile(mnt + "/etc/layer"), "bafylayer\n");
  EXPECT_EQ(ReadFile(mnt + "/one"), "base\n");
  // A view of a lazy layer with no parent: ro bind of its directory.
  ASSERT_EQ(Prepare("default/8/extract-3 sha256:solo", "",
                    {{kSnapshotRefLabel, "sha256:solo"}, {kCidLabel, "bafysolo"}})
                .error_code(),
            grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_TRUE(Prepare("default/8/v", "sha256:solo", {}, &r, true).ok());
  EXPECT_EQ(r.mounts(0).type(), "bind");
  EXPECT_EQ(r.mounts(0).options(0), "ro");
  EXPECT_EQ(ReadFile(r.mounts(0).source() + "/etc/layer"), "bafysolo\n");

  // /status and /metrics show the lazy layer.
  std::string status = RenderStatusJson(*service_);
  auto j = nlohmann::json::parse(status);
  bool seen = false;
  for (const auto& s : j["snapshots"]) {
    if (s["key"] == "sha256:chain2") {
      seen = true;
      EXPECT_EQ(s["lazy"]["blob_cid"], "bafylayer");
      EXPECT_EQ(s["lazy"]["bytes_fetched"], 123);
      EXPECT_EQ(s["lazy"]["blob_size"], 1000);
    }
  }
  EXPECT_TRUE(seen) << status;
  std::string prom = RenderPrometheus(*service_);
  EXPECT_NE(prom.find("ipfly_snapshotter_lazy_mounts_total 2\n"), std::string::npos) << prom;
  EXPECT_NE(prom.find("ipfly_snapshotter_lazy_layers_attached 2\n"), std::string::npos);
  EXPECT_NE(prom.find("ipfly_snapshotter_layer_bytes_fetched{id="), std::string::npos);
  EXPECT_NE(prom.find(R"(ipfly_snapshotter_rpc_total{method="Prepare",code="AlreadyExists"} 3)"),
            std::string::npos)
      << prom;

  // Removing: children first; the lazy layer is detached.
  ASSERT_TRUE(Remove("default/7/c1").ok());
  ASSERT_TRUE(Remove("default/8/v").ok());
  api::Info info;
  ASSERT_TRUE(Stat("sha256:chain2", &info).ok());
  ASSERT_TRUE(Remove("sha256:chain2").ok());
  EXPECT_EQ(lazy_->detached.size(), 1u);
  EXPECT_EQ(lazy_->Layers().size(), 1u);
}

TEST_F(ServiceTest, FallbacksAreCountedAndBecomeOrdinarySnapshots) {
  struct Case {
    std::string cid;  // "" = no ipfly label
    std::string reason;
  };
  int i = 0;
  for (const Case& c : std::vector<Case>{{"", "not_found"},
                                         {"unseekable", "not_seekable"},
                                         {"tiny", "too_small"},
                                         {"down", "unavailable"},
                                         {"noattach", "attach_failed"}}) {
    Labels labels{{kSnapshotRefLabel, "sha256:ref" + std::to_string(i)}};
    if (!c.cid.empty()) labels[kCidLabel] = c.cid;
    std::string key = "default/1/extract-" + std::to_string(i++);
    api::PrepareSnapshotResponse r;
    ASSERT_TRUE(Prepare(key, "", labels, &r).ok()) << c.reason;
    EXPECT_EQ(r.mounts(0).type(), "bind");
    api::Info info;
    ASSERT_TRUE(Stat(key, &info).ok());
    EXPECT_EQ(info.kind(), api::ACTIVE);
    EXPECT_EQ(service_->metrics().fallbacks()[c.reason], 1u) << c.reason;
  }
  EXPECT_EQ(service_->metrics().lazy_mounts(), 0u);
  std::string prom = RenderPrometheus(*service_);
  EXPECT_NE(prom.find(R"(ipfly_snapshotter_fallbacks_total{reason="not_seekable"} 1)"),
            std::string::npos)
      << prom;
}

TEST_F(ServiceTest, BrokenLazyLayerGivesErrorNotBrokenMount) {
  Labels labels{{kSnapshotRefLabel, "sha256:l"}, {kCidLabel, "bafy"}};
  ASSERT_EQ(Prepare("k", "", labels).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_TRUE(Prepare("c1", "sha256:l", {}).ok());
  lazy_->broken = true;
  api::MountsResponse mr;
  EXPECT_EQ(Mounts("c1", &mr).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Prepare("c2", "sha256:l", {}).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Stat("c2").error_code(), grpc::StatusCode::NOT_FOUND);  // nothing half-created
  lazy_->broken = false;
  EXPECT_TRUE(Mounts("c1", &mr).ok());
}

TEST_F(ServiceTest, RestartKeepsStateAndReattachesLazyLayers) {
  Layer("base", "", "one");
  Labels labels{{kSnapshotRefLabel, "sha256:l"}, {kCidLabel, "bafy"}};
  ASSERT_EQ(Prepare("k", "base", labels).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  ASSERT_TRUE(Prepare("c1", "sha256:l", {}).ok());
  Stop();
  int ensures = lazy_->ensures;
  Start();
  EXPECT_EQ(lazy_->ensures, ensures + 1);  // the one lazy snapshot, at start
  api::Info info;
  ASSERT_TRUE(Stat("sha256:l", &info).ok());
  EXPECT_EQ(info.parent(), "base");
  api::MountsResponse mr;
  ASSERT_TRUE(Mounts("c1", &mr).ok());
  EXPECT_EQ(mr.mounts(0).type(), "overlay");
  ASSERT_TRUE(Prepare("c2", "sha256:l", {}).ok());
}

// The span cache cap keeps the layers of running containers: the service tells LazyLayers which
// lazy layers are in the chain of an active snapshot or a view, after every change.
TEST_F(ServiceTest, LazyLayersUnderActiveSnapshotsAndViewsAreInUse) {
  Layer("base", "", "one");
  auto lazy = [&](const std::string& ref, const std::string& parent, const std::string& cid) {
    EXPECT_EQ(
        Prepare("k " + ref, parent, {{kSnapshotRefLabel, ref}, {kCidLabel, cid}}).error_code(),
        grpc::StatusCode::ALREADY_EXISTS);
    auto r = service_->store().Get(ref);
    EXPECT_TRUE(r.ok());
    return r.ok() ? std::to_string(r->id) : std::string();
  };
  std::string l1 = lazy("sha256:l1", "base", "bafy1");
  std::string l2 = lazy("sha256:l2", "sha256:l1", "bafy2");
  std::string solo = lazy("sha256:solo", "", "bafy3");
  using Set = std::set<std::string>;
  EXPECT_EQ(lazy_->InUse(), Set{});  // an image's committed layers alone are not in use
  ASSERT_TRUE(Prepare("c1", "sha256:l2", {}).ok());
  EXPECT_EQ(lazy_->InUse(), (Set{l1, l2}));
  ASSERT_TRUE(Prepare("v", "sha256:solo", {}, nullptr, /*view=*/true).ok());
  EXPECT_EQ(lazy_->InUse(), (Set{l1, l2, solo}));
  // An ordinary layer unpacked on top of a lazy one keeps it in use through the chain.
  ASSERT_TRUE(Prepare("x-active", "sha256:l1", {}).ok());
  ASSERT_TRUE(Commit("x", "x-active").ok());
  ASSERT_TRUE(Remove("c1").ok());
  EXPECT_EQ(lazy_->InUse(), (Set{solo}));
  ASSERT_TRUE(Prepare("c3", "x", {}).ok());
  EXPECT_EQ(lazy_->InUse(), (Set{l1, solo}));
  auto status = nlohmann::json::parse(RenderStatusJson(*service_));
  ASSERT_TRUE(status["span_cache"].is_object()) << status.dump();
  for (const auto& s : status["snapshots"]) {
    if (s["key"] == "sha256:l1") {
      EXPECT_EQ(s["lazy"]["in_use"], true);
    }
    if (s["key"] == "sha256:l2") {
      EXPECT_EQ(s["lazy"]["in_use"], false);
    }
  }
  ASSERT_TRUE(Remove("v").ok());
  ASSERT_TRUE(Remove("c3").ok());
  EXPECT_EQ(lazy_->InUse(), Set{});
  // Recomputed on start.
  ASSERT_TRUE(Prepare("c4", "sha256:l2", {}).ok());
  Stop();
  lazy_->SetInUse({"stale"});
  Start();
  EXPECT_EQ(lazy_->InUse(), (Set{l1, l2}));
}

TEST_F(ServiceTest, WithoutLazyLayersRefPreparesAreOrdinary) {
  Stop();
  Start(/*with_lazy=*/false);
  Labels labels{{kSnapshotRefLabel, "sha256:l"}, {kCidLabel, "bafy"}};
  ASSERT_TRUE(Prepare("k", "", labels).ok());
  EXPECT_EQ(service_->metrics().fallbacks()["disabled"], 1u);
}

TEST_F(ServiceTest, MetricsServerServesPrometheusAndStatus) {
  Layer("base", "", "one");
  auto m = MetricsServer::Start("127.0.0.1:0", service_.get());
  ASSERT_TRUE(m.ok()) << m.error().ToString();
  httplib::Client cli("127.0.0.1", (*m)->port());
  auto res = cli.Get("/metrics");
  ASSERT_TRUE(res);
  EXPECT_EQ(res->status, 200);
  EXPECT_NE(res->body.find(R"(ipfly_snapshotter_rpc_total{method="Commit",code="OK"} 1)"),
            std::string::npos)
      << res->body;
  res = cli.Get("/status");
  ASSERT_TRUE(res);
  auto j = nlohmann::json::parse(res->body);
  ASSERT_EQ(j["snapshots"].size(), 1u);
  EXPECT_EQ(j["snapshots"][0]["key"], "base");
  EXPECT_EQ(j["lazy_enabled"], true);
}

}  // namespace
}  // namespace ipfly::snapshotter
