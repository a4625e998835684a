#include "snapshotter/snapshot_service.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <set>
#include <shared_mutex>
#include <system_error>
#include <utility>

#include "core/base/log.h"

namespace ipfly::snapshotter {
namespace fs = std::filesystem;
namespace {

constexpr size_t kMaxLabelSize = 4096;

// Labels are stored as JSON and sent as proto3 strings: both need UTF-8 (structure only).
bool ValidUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    size_t n;
    if (c < 0x80) {
      n = 0;
    } else if ((c >> 5) == 0x6) {
      n = 1;
    } else if ((c >> 4) == 0xE) {
      n = 2;
    } else if ((c >> 3) == 0x1E) {
      n = 3;
    } else {
      return false;
    }
    for (size_t j = 1; j <= n; ++j) {
      if (i + j >= s.size() || (static_cast<unsigned char>(s[i + j]) >> 6) != 0x2) return false;
    }
    i += n + 1;
  }
  return true;
}

Status ValidateLabels(const Labels& labels) {
  for (const auto& [k, v] : labels) {
    if (!ValidUtf8(k) || !ValidUtf8(v)) {
      return InvalidArgument("label " + k.substr(0, 10) + " is not valid UTF-8");
    }
    if (k.size() + v.size() > kMaxLabelSize) {
      return InvalidArgument("label key and value greater than maximum size (4096 bytes), key: " +
                             k.substr(0, 10));
    }
  }
  return OkStatus();
}

std::string Join(const std::vector<std::string>& v, const char* sep) {
  std::string out;
  for (const auto& s : v) {
    if (!out.empty()) out += sep;
    out += s;
  }
  return out;
}

// Why a layer is not served lazily, as a short metrics label.
std::string FallbackReason(const Error& e) {
  const std::string& m = e.message();
  switch (e.code()) {
    case Errc::kNotFound:
      return "not_found";
    case Errc::kFailedPrecondition:
    case Errc::kUnsupported:
      if (m.find("seek") != std::string::npos) return "not_seekable";
      if (m.find("small") != std::string::npos || m.find("min_lazy_size") != std::string::npos) {
        return "too_small";
      }
      return "precondition";
    case Errc::kUnavailable:
    case Errc::kTimeout:
      return "unavailable";
    default:
      return "error";
  }
}

}  // namespace

Result<UsageInfo> DiskUsage(const std::string& dir) {
  UsageInfo u;
  std::set<std::pair<dev_t, ino_t>> seen;
  auto add = [&](const std::string& p) -> Status {
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) {
      if (errno == ENOENT) return OkStatus();  // removed while we walk (a running container)
      return ErrnoError("lstat " + p, errno);
    }
    if (seen.emplace(st.st_dev, st.st_ino).second) {
      ++u.inodes;
      u.size += static_cast<int64_t>(st.st_blocks) * 512;
    }
    return OkStatus();
  };
  IPFLY_RETURN_IF_ERROR(add(dir));
  std::error_code ec;
  fs::recursive_directory_iterator it(dir, fs::directory_options::none, ec), end;
  if (ec) return IoError("walk " + dir + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return IoError("walk " + dir + ": " + ec.message());
    IPFLY_RETURN_IF_ERROR(add(it->path().string()));
  }
  if (ec) return IoError("walk " + dir + ": " + ec.message());
  return u;
}

Result<std::unique_ptr<SnapshotService>> SnapshotService::Open(const std::string& root,
                                                               LazyLayers* lazy) {
  auto s = std::unique_ptr<SnapshotService>(new SnapshotService);
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec) return IoError("create " + root + ": " + ec.message());
  ::chmod(root.c_str(), 0700);
  s->root_ = fs::absolute(root).lexically_normal().string();
  if (s->root_.size() > 1 && s->root_.back() == '/') s->root_.pop_back();
  fs::create_directories(s->root_ + "/snapshots", ec);
  if (ec) return IoError("create " + s->root_ + "/snapshots: " + ec.message());
  ::chmod((s->root_ + "/snapshots").c_str(), 0700);
  s->store_ = IPFLY_TRY(MetadataStore::Open(s->root_ + "/metadata.db"));
  s->lazy_ = lazy;
  s->index_off_ = ::access("/sys/module/overlay/parameters/index", F_OK) == 0;
  s->ReattachLazy();
  s->UpdateLazyInUse();
  return s;
}

void SnapshotService::UpdateLazyInUse() {
  if (!lazy_) return;
  // Serialized so that the last SetInUse always reflects a List taken after every mutation
  // that finished before it.
  std::lock_guard lk(in_use_mu_);
  auto all = store_->List();
  if (!all.ok()) {
    IPFLY_LOG_WARN("snapshotter: cannot list snapshots to mark lazy layers in use: {}",
                   all.error().ToString());
    return;
  }
  std::map<std::string, const SnapshotRecord*> by_key;
  for (const auto& r : *all) by_key[r.key] = &r;
  std::set<std::string> ids;
  for (const auto& r : *all) {
    if (r.kind != Kind::kActive && r.kind != Kind::kView) continue;
    std::string p = r.parent;
    for (size_t hops = 0; !p.empty() && hops < by_key.size(); ++hops) {
      auto it = by_key.find(p);
      if (it == by_key.end()) break;
      if (it->second->lazy) ids.insert(std::to_string(it->second->id));
      p = it->second->parent;
    }
  }
  lazy_->SetInUse(ids);
}

void SnapshotService::ReattachLazy() {
  auto all = store_->List();
  if (!all.ok()) {
    IPFLY_LOG_WARN("snapshotter: cannot list snapshots to re-attach lazy layers: {}",
                   all.error().ToString());
    return;
  }
  for (const auto& r : *all) {
    if (!r.lazy) continue;
    if (!lazy_) {
      IPFLY_LOG_WARN("snapshotter: lazy snapshot {} (id {}) cannot be served: lazy layers are off",
                     r.key, r.id);
      continue;
    }
    auto d = lazy_->EnsureAttached(std::to_string(r.id), *r.lazy);
    if (!d.ok()) {
      IPFLY_LOG_WARN("snapshotter: re-attaching lazy snapshot {} (id {}, {}) failed: {}", r.key,
                     r.id, r.lazy->blob_cid, d.error().ToString());
    } else {
      IPFLY_LOG_INFO("snapshotter: re-attached lazy snapshot {} at {}", r.key, *d);
    }
  }
}

std::string SnapshotService::SnapshotDir(int64_t id) const {
  return root_ + "/snapshots/" + std::to_string(id);
}

Result<std::string> SnapshotService::LayerDir(const SnapshotRecord& r) {
  if (!r.lazy) return SnapshotDir(r.id) + "/fs";
  if (!lazy_) {
    return Error(Errc::kUnavailable,
                 "snapshot " + r.key + " is a lazy layer but lazy layers are not available");
  }
  auto d = lazy_->EnsureAttached(std::to_string(r.id), *r.lazy);
  if (!d.ok()) {
    return Error(Errc::kUnavailable,
                 "lazy layer of snapshot " + r.key + " is not available: " + d.error().message());
  }
  return std::move(*d);
}

Result<std::vector<std::string>> SnapshotService::LowerDirs(
    const std::vector<SnapshotRecord>& chain) {
  std::vector<std::string> out;
  out.reserve(chain.size());
  for (const auto& r : chain) out.push_back(IPFLY_TRY(LayerDir(r)));
  return out;
}

Result<std::vector<MountSpec>> SnapshotService::MountsFor(
    const SnapshotRecord& r, const std::vector<std::string>& lowerdirs) {
  std::string dir = SnapshotDir(r.id);
  if (lowerdirs.empty()) {
    return std::vector<MountSpec>{
        {"bind", dir + "/fs", {r.kind == Kind::kView ? "ro" : "rw", "rbind"}}};
  }
  if (r.kind == Kind::kView && lowerdirs.size() == 1) {
    return std::vector<MountSpec>{{"bind", lowerdirs[0], {"ro", "rbind"}}};
  }
  MountSpec m{"overlay", "overlay", {}};
  if (index_off_) m.options.push_back("index=off");
  if (r.kind == Kind::kActive) {
    m.options.push_back("workdir=" + dir + "/work");
    m.options.push_back("upperdir=" + dir + "/fs");
  }
  m.options.push_back("lowerdir=" + Join(lowerdirs, ":"));
  return std::vector<MountSpec>{std::move(m)};
}

Result<std::vector<MountSpec>> SnapshotService::Prepare(const std::string& key,
                                                        const std::string& parent,
                                                        const Labels& labels) {
  IPFLY_RETURN_IF_ERROR(ValidateLabels(labels));
  if (labels.count(kSnapshotRefLabel)) {
    if (auto e = TryLazy(key, parent, labels)) return std::move(*e);
  }
  return Create(Kind::kActive, key, parent, labels);
}

Result<std::vector<MountSpec>> SnapshotService::View(const std::string& key,
                                                     const std::string& parent,
                                                     const Labels& labels) {
  IPFLY_RETURN_IF_ERROR(ValidateLabels(labels));
  return Create(Kind::kView, key, parent, labels);
}

void SnapshotService::Fallback(const std::string& ref, const std::string& reason,
                               const std::string& why) {
  metrics_.CountFallback(reason);
  IPFLY_LOG_INFO("snapshotter: layer {} is not lazy ({}): {}", ref, reason, why);
}

std::optional<Error> SnapshotService::TryLazy(const std::string& key, const std::string& parent,
                                              const Labels& labels) {
  const std::string& ref = labels.at(kSnapshotRefLabel);
  if (ref.empty()) return std::nullopt;
  if (store_->Get(ref).ok()) {
    return Error(Errc::kAlreadyExists, "target snapshot \"" + ref + "\": already exists");
  }
  if (!lazy_) {
    Fallback(ref, "disabled", "lazy layers are not available");
    return std::nullopt;
  }
  if (!parent.empty()) {
    auto p = store_->Get(parent);
    // An invalid parent is the ordinary path's error to report.
    if (!p.ok() || p->kind != Kind::kCommitted) return std::nullopt;
  }
  auto layer = lazy_->Resolve(labels);
  if (!layer.ok()) {
    Fallback(ref, FallbackReason(layer.error()), layer.error().ToString());
    return std::nullopt;
  }
  auto id = store_->ReserveId();
  if (!id.ok()) {
    Fallback(ref, "error", id.error().ToString());
    return std::nullopt;
  }
  std::string lid = std::to_string(*id);
  auto dir = lazy_->Attach(lid, *layer);
  if (!dir.ok()) {
    Fallback(ref, "attach_failed", dir.error().ToString());
    return std::nullopt;
  }
  MetadataStore::CreateParams p;
  p.kind = Kind::kCommitted;
  p.key = ref;
  p.parent = parent;
  p.labels = labels;
  p.lazy = *layer;
  p.id = *id;
  auto rec = store_->Create(p, nullptr);
  if (!rec.ok()) {
    (void)lazy_->Detach(lid);
    if (rec.error().code() == Errc::kAlreadyExists) {
      return Error(Errc::kAlreadyExists, "target snapshot \"" + ref + "\": already exists");
    }
    Fallback(ref, "error", rec.error().ToString());
    return std::nullopt;
  }
  metrics_.CountLazyMount();
  IPFLY_LOG_INFO("snapshotter: lazy layer {} (digest {}, blob {}, index {}, by {}) for {} at {}",
                 ref, layer->digest, layer->blob_cid, layer->index_cid, layer->resolved_by, key,
                 *dir);
  return Error(Errc::kAlreadyExists, "target snapshot \"" + ref + "\": already exists (lazy)");
}

Result<std::vector<MountSpec>> SnapshotService::Create(Kind kind, const std::string& key,
                                                       const std::string& parent,
                                                       const Labels& labels) {
  if (key.empty()) return InvalidArgument("snapshot key must not be empty");
  std::vector<SnapshotRecord> chain;
  if (!parent.empty()) {
    chain = IPFLY_TRY(store_->Chain(parent));
    if (chain[0].kind != Kind::kCommitted) {
      return InvalidArgument("parent \"" + parent + "\" is not a committed snapshot");
    }
  }
  std::vector<std::string> lowers = IPFLY_TRY(LowerDirs(chain));

  std::shared_lock dirs_lk(dirs_mu_);
  std::string tmpl = root_ + "/snapshots/new-XXXXXX";
  if (!::mkdtemp(tmpl.data())) return ErrnoError("create temporary snapshot dir", errno);
  std::string td = tmpl;
  struct Cleanup {
    std::string* dir;
    ~Cleanup() {
      if (!dir->empty()) {
        std::error_code ec;
        fs::remove_all(*dir, ec);
      }
    }
  } cleanup{&td};
  if (::mkdir((td + "/fs").c_str(), 0755) != 0) return ErrnoError("mkdir " + td + "/fs", errno);
  ::chmod((td + "/fs").c_str(), 0755);  // not subject to the umask
  if (kind == Kind::kActive && ::mkdir((td + "/work").c_str(), 0711) != 0) {
    return ErrnoError("mkdir " + td + "/work", errno);
  }
  if (!lowers.empty()) {
    struct stat st {};
    if (::stat(lowers[0].c_str(), &st) != 0) return ErrnoError("stat parent " + lowers[0], errno);
    if (::lchown((td + "/fs").c_str(), st.st_uid, st.st_gid) != 0) {
      return ErrnoError("chown " + td + "/fs", errno);
    }
  }
  MetadataStore::CreateParams p;
  p.kind = kind;
  p.key = key;
  p.parent = parent;
  p.labels = labels;
  auto rec = IPFLY_TRY(store_->Create(p, [&](const SnapshotRecord& r) -> Status {
    std::string dst = SnapshotDir(r.id);
    std::error_code ec;
    fs::remove_all(dst, ec);  // a leftover of a crash before the id was committed
    if (::rename(td.c_str(), dst.c_str()) != 0) return ErrnoError("rename to " + dst, errno);
    td.clear();
    return OkStatus();
  }));
  if (!chain.empty()) UpdateLazyInUse();
  return MountsFor(rec, lowers);
}

Result<std::vector<MountSpec>> SnapshotService::Mounts(const std::string& key) {
  auto r = IPFLY_TRY(store_->Get(key));
  if (r.kind != Kind::kActive && r.kind != Kind::kView) {
    return Error(Errc::kFailedPrecondition, "requested snapshot " + key + " not active or view");
  }
  std::vector<SnapshotRecord> chain;
  if (!r.parent.empty()) chain = IPFLY_TRY(store_->Chain(r.parent));
  std::vector<std::string> lowers = IPFLY_TRY(LowerDirs(chain));
  return MountsFor(r, lowers);
}

Status SnapshotService::Commit(const std::string& name, const std::string& key,
                               const Labels& labels) {
  IPFLY_RETURN_IF_ERROR(ValidateLabels(labels));
  auto r = IPFLY_TRY(store_->Get(key));
  if (r.kind != Kind::kActive) {
    return Error(Errc::kFailedPrecondition, "snapshot \"" + key + "\" is not active");
  }
  UsageInfo u = IPFLY_TRY(DiskUsage(SnapshotDir(r.id) + "/fs"));
  IPFLY_TRY(store_->Commit(key, name, u.size, u.inodes, labels));
  UpdateLazyInUse();  // the active snapshot is gone: its parents may no longer be in use
  return OkStatus();
}

Status SnapshotService::Remove(const std::string& key) {
  auto r = IPFLY_TRY(store_->Remove(key));
  if (r.kind != Kind::kCommitted) UpdateLazyInUse();
  std::error_code ec;
  fs::remove_all(SnapshotDir(r.id), ec);
  if (ec) {
    IPFLY_LOG_WARN("snapshotter: removing {} failed (Cleanup retries): {}", SnapshotDir(r.id),
                   ec.message());
  }
  if (r.lazy && lazy_) {
    auto st = lazy_->Detach(std::to_string(r.id));
    if (!st.ok() && st.error().code() != Errc::kNotFound) {
      IPFLY_LOG_WARN("snapshotter: detaching lazy layer of {} failed: {}", key,
                     st.error().ToString());
    }
  }
  return OkStatus();
}

Result<SnapshotRecord> SnapshotService::Stat(const std::string& key) { return store_->Get(key); }

Result<SnapshotRecord> SnapshotService::Update(const std::string& name, const Labels& labels,
                                               const std::vector<std::string>& fieldpaths) {
  IPFLY_RETURN_IF_ERROR(ValidateLabels(labels));
  return store_->UpdateLabels(name, labels, fieldpaths);
}

Status SnapshotService::Walk(const std::vector<std::string>& filters,
                             const std::function<Status(const SnapshotRecord&)>& fn) {
  auto fs_ = IPFLY_TRY(Filter::ParseAll(filters));
  auto all = IPFLY_TRY(store_->List());
  for (const auto& r : all) {
    auto lookup = [&r](const std::vector<std::string>& path) -> std::optional<std::string> {
      if (path.empty()) return std::nullopt;
      const std::string& f = path[0];
      if (f == "kind") return std::string(KindName(r.kind));
      if (f == "name") return r.key;
      if (f == "parent") return r.parent;
      if (f == "labels") {
        if (r.labels.empty()) return std::nullopt;
        std::vector<std::string> rest(path.begin() + 1, path.end());
        auto it = r.labels.find(Join(rest, "."));
        if (it == r.labels.end()) return std::nullopt;
        return it->second;
      }
      return std::nullopt;
    };
    if (!Filter::MatchAny(fs_, lookup)) continue;
    IPFLY_RETURN_IF_ERROR(fn(r));
  }
  return OkStatus();
}

Result<UsageInfo> SnapshotService::Usage(const std::string& key) {
  auto r = IPFLY_TRY(store_->Get(key));
  if (r.kind == Kind::kActive) return DiskUsage(SnapshotDir(r.id) + "/fs");
  return UsageInfo{r.size, r.inodes};
}

Status SnapshotService::Cleanup() {
  // Exclusive: no Create may be between making its directory and committing its row.
  std::unique_lock lk(dirs_mu_);
  auto all = IPFLY_TRY(store_->List());
  std::set<std::string> ids, lazy_ids;
  for (const auto& r : all) {
    ids.insert(std::to_string(r.id));
    if (r.lazy) lazy_ids.insert(std::to_string(r.id));
  }
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (const auto& e : fs::directory_iterator(root_ + "/snapshots", ec)) {
    if (!ids.count(e.path().filename().string())) doomed.push_back(e.path());
  }
  if (ec) return IoError("list " + root_ + "/snapshots: " + ec.message());
  for (const auto& d : doomed) {
    fs::remove_all(d, ec);
    if (ec) IPFLY_LOG_WARN("snapshotter: cleanup of {} failed: {}", d.string(), ec.message());
  }
  if (lazy_) {
    for (const auto& l : lazy_->Layers()) {
      if (!lazy_ids.count(l.id)) (void)lazy_->Detach(l.id);
    }
  }
  return OkStatus();
}

}  // namespace ipfly::snapshotter
