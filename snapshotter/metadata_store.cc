#include "snapshotter/metadata_store.h"

#include <sqlite3.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <utility>

namespace ipfly::snapshotter {
namespace {

using Stmt = SqliteStatement;
using Txn = SqliteTransaction;

constexpr const char* kColumns =
    "id, key, parent, kind, labels, created_ns, updated_ns, size, inodes, lazy, blob_cid, "
    "index_cid, digest, blob_size, resolved_by";

SnapshotRecord ReadRow(Stmt& s) {
  SnapshotRecord r;
  r.id = s.Int(0);
  r.key = s.Text(1);
  r.parent = s.Text(2);
  r.kind = static_cast<Kind>(s.Int(3));
  auto j = nlohmann::json::parse(s.Text(4), nullptr, /*allow_exceptions=*/false);
  if (j.is_object()) {
    for (auto& [k, v] : j.items()) {
      if (v.is_string()) r.labels[k] = v.get<std::string>();
    }
  }
  r.created_ns = s.Int(5);
  r.updated_ns = s.Int(6);
  r.size = s.Int(7);
  r.inodes = s.Int(8);
  if (s.Int(9) != 0) {
    RemoteLayer l;
    l.blob_cid = s.Text(10);
    l.index_cid = s.Text(11);
    l.digest = s.Text(12);
    l.size = static_cast<uint64_t>(s.Int(13));
    l.resolved_by = s.Text(14);
    r.lazy = std::move(l);
  }
  return r;
}

std::string LabelsJson(const Labels& labels) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [k, v] : labels) {
    if (!v.empty()) j[k] = v;
  }
  // Callers validate UTF-8; never throw from here regardless.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Labels DropEmpty(Labels labels) {
  std::erase_if(labels, [](const auto& kv) { return kv.second.empty(); });
  return labels;
}

}  // namespace

std::string_view KindName(Kind k) {
  switch (k) {
    case Kind::kView:
      return "view";
    case Kind::kActive:
      return "active";
    case Kind::kCommitted:
      return "committed";
  }
  return "unknown";
}

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Result<std::unique_ptr<MetadataStore>> MetadataStore::Open(const std::string& path) {
  SqliteDb db = IPFLY_TRY(SqliteDb::Open(path, "metadata"));
  IPFLY_RETURN_IF_ERROR(
      db.Exec("CREATE TABLE IF NOT EXISTS snapshots ("
              " id INTEGER PRIMARY KEY,"
              " key TEXT NOT NULL UNIQUE,"
              " parent TEXT NOT NULL DEFAULT '',"
              " kind INTEGER NOT NULL,"
              " labels TEXT NOT NULL DEFAULT '{}',"
              " created_ns INTEGER NOT NULL,"
              " updated_ns INTEGER NOT NULL,"
              " size INTEGER NOT NULL DEFAULT 0,"
              " inodes INTEGER NOT NULL DEFAULT 0,"
              " lazy INTEGER NOT NULL DEFAULT 0,"
              " blob_cid TEXT, index_cid TEXT, digest TEXT, blob_size INTEGER, resolved_by TEXT);"
              "CREATE INDEX IF NOT EXISTS snapshots_by_parent ON snapshots(parent);"
              "CREATE TABLE IF NOT EXISTS sequence (name TEXT PRIMARY KEY, next INTEGER NOT NULL);"
              "INSERT OR IGNORE INTO sequence(name, next) VALUES ('snapshot_id', 1);"));
  return std::unique_ptr<MetadataStore>(new MetadataStore(std::move(db)));
}

MetadataStore::~MetadataStore() = default;

Result<int64_t> MetadataStore::NextIdLocked() {
  Stmt s(db_, "UPDATE sequence SET next = next + 1 WHERE name = 'snapshot_id' RETURNING next - 1");
  if (!s.prepared() || s.Step() != SQLITE_ROW) return db_.Err("next id");
  return s.Int(0);
}

Result<int64_t> MetadataStore::ReserveId() {
  std::lock_guard lk(mu_);
  Txn t(db_);
  IPFLY_RETURN_IF_ERROR(t.Begun());
  int64_t id = IPFLY_TRY(NextIdLocked());
  IPFLY_RETURN_IF_ERROR(t.Commit());
  return id;
}

Result<std::optional<SnapshotRecord>> MetadataStore::GetLocked(const std::string& key) {
  std::string sql = std::string("SELECT ") + kColumns + " FROM snapshots WHERE key = ?";
  Stmt s(db_, sql.c_str());
  if (!s.prepared()) return db_.Err("get");
  s.Bind(1, key);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<SnapshotRecord>();
  if (rc != SQLITE_ROW) return db_.Err("get");
  return std::optional<SnapshotRecord>(ReadRow(s));
}

Result<SnapshotRecord> MetadataStore::Get(const std::string& key) {
  std::lock_guard lk(mu_);
  auto r = IPFLY_TRY(GetLocked(key));
  if (!r) return NotFound("snapshot " + key + " does not exist");
  return std::move(*r);
}

Result<std::vector<SnapshotRecord>> MetadataStore::Chain(const std::string& parent_key) {
  std::lock_guard lk(mu_);
  std::vector<SnapshotRecord> out;
  std::string k = parent_key;
  while (!k.empty()) {
    auto r = IPFLY_TRY(GetLocked(k));
    if (!r) return NotFound("parent snapshot " + k + " does not exist");
    if (out.size() > 100'000) return Internal("parent chain loops at " + k);
    k = r->parent;
    out.push_back(std::move(*r));
  }
  return out;
}

Result<std::vector<SnapshotRecord>> MetadataStore::List() {
  std::lock_guard lk(mu_);
  std::string sql = std::string("SELECT ") + kColumns + " FROM snapshots ORDER BY key";
  Stmt s(db_, sql.c_str());
  if (!s.prepared()) return db_.Err("list");
  std::vector<SnapshotRecord> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(ReadRow(s));
  if (rc != SQLITE_DONE) return db_.Err("list");
  return out;
}

Status MetadataStore::InsertLocked(const SnapshotRecord& r) {
  std::string sql = std::string("INSERT INTO snapshots (") + kColumns +
                    ") VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)";
  Stmt s(db_, sql.c_str());
  if (!s.prepared()) return db_.Err("insert");
  s.Bind(1, r.id);
  s.Bind(2, r.key);
  s.Bind(3, r.parent);
  s.Bind(4, static_cast<int64_t>(r.kind));
  s.Bind(5, LabelsJson(r.labels));
  s.Bind(6, r.created_ns);
  s.Bind(7, r.updated_ns);
  s.Bind(8, r.size);
  s.Bind(9, r.inodes);
  s.Bind(10, static_cast<int64_t>(r.lazy ? 1 : 0));
  if (r.lazy) {
    s.Bind(11, r.lazy->blob_cid);
    s.Bind(12, r.lazy->index_cid);
    s.Bind(13, r.lazy->digest);
    s.Bind(14, static_cast<int64_t>(r.lazy->size));
    s.Bind(15, r.lazy->resolved_by);
  } else {
    for (int i = 11; i <= 15; ++i) s.BindNull(i);
  }
  if (s.Step() != SQLITE_DONE) return db_.Err("insert " + r.key);
  return OkStatus();
}

Result<SnapshotRecord> MetadataStore::Create(
    const CreateParams& p, const std::function<Status(const SnapshotRecord&)>& before_commit) {
  if (p.key.empty()) return InvalidArgument("snapshot key must not be empty");
  if (p.lazy && p.kind != Kind::kCommitted) {
    return InvalidArgument("a lazy snapshot must be committed");
  }
  std::lock_guard lk(mu_);
  Txn t(db_);
  IPFLY_RETURN_IF_ERROR(t.Begun());
  if (!p.parent.empty()) {
    auto parent = IPFLY_TRY(GetLocked(p.parent));
    if (!parent) return NotFound("missing parent \"" + p.parent + "\"");
    if (parent->kind != Kind::kCommitted) {
      return InvalidArgument("parent \"" + p.parent + "\" is not a committed snapshot");
    }
  }
  if (IPFLY_TRY(GetLocked(p.key))) return Error(Errc::kAlreadyExists, "snapshot " + p.key);
  SnapshotRecord r;
  r.id = p.id != 0 ? p.id : IPFLY_TRY(NextIdLocked());
  r.key = p.key;
  r.parent = p.parent;
  r.kind = p.kind;
  r.labels = DropEmpty(p.labels);
  r.created_ns = r.updated_ns = NowNs();
  r.lazy = p.lazy;
  IPFLY_RETURN_IF_ERROR(InsertLocked(r));
  if (before_commit) IPFLY_RETURN_IF_ERROR(before_commit(r));
  IPFLY_RETURN_IF_ERROR(t.Commit());
  return r;
}

Result<SnapshotRecord> MetadataStore::Commit(const std::string& key, const std::string& name,
                                             int64_t size, int64_t inodes, const Labels& labels) {
  if (name.empty()) return InvalidArgument("committed snapshot name must not be empty");
  std::lock_guard lk(mu_);
  Txn t(db_);
  IPFLY_RETURN_IF_ERROR(t.Begun());
  if (IPFLY_TRY(GetLocked(name))) {
    return Error(Errc::kAlreadyExists, "committed snapshot " + name + ": already exists");
  }
  auto cur = IPFLY_TRY(GetLocked(key));
  if (!cur) return NotFound("failed to get active snapshot \"" + key + "\"");
  if (cur->kind != Kind::kActive) {
    return Error(Errc::kFailedPrecondition, "snapshot \"" + key + "\" is not active");
  }
  int64_t now = NowNs();
  Stmt s(db_,
         "UPDATE snapshots SET key = ?, kind = ?, labels = ?, created_ns = ?, updated_ns = ?, "
         "size = ?, inodes = ? WHERE id = ?");
  if (!s.prepared()) return db_.Err("commit");
  s.Bind(1, name);
  s.Bind(2, static_cast<int64_t>(Kind::kCommitted));
  s.Bind(3, LabelsJson(labels));
  s.Bind(4, now);
  s.Bind(5, now);
  s.Bind(6, size);
  s.Bind(7, inodes);
  s.Bind(8, cur->id);
  if (s.Step() != SQLITE_DONE) return db_.Err("commit " + key);
  IPFLY_RETURN_IF_ERROR(t.Commit());
  SnapshotRecord r = std::move(*cur);
  r.key = name;
  r.kind = Kind::kCommitted;
  r.labels = DropEmpty(labels);
  r.created_ns = r.updated_ns = now;
  r.size = size;
  r.inodes = inodes;
  return r;
}

Result<SnapshotRecord> MetadataStore::Remove(const std::string& key) {
  std::lock_guard lk(mu_);
  Txn t(db_);
  IPFLY_RETURN_IF_ERROR(t.Begun());
  auto cur = IPFLY_TRY(GetLocked(key));
  if (!cur) return NotFound("snapshot " + key + " does not exist");
  {
    Stmt c(db_, "SELECT 1 FROM snapshots WHERE parent = ? LIMIT 1");
    if (!c.prepared()) return db_.Err("remove");
    c.Bind(1, key);
    int rc = c.Step();
    if (rc == SQLITE_ROW) {
      return Error(Errc::kFailedPrecondition, "cannot remove snapshot " + key + " with child");
    }
    if (rc != SQLITE_DONE) return db_.Err("remove");
  }
  Stmt d(db_, "DELETE FROM snapshots WHERE id = ?");
  if (!d.prepared()) return db_.Err("remove");
  d.Bind(1, cur->id);
  if (d.Step() != SQLITE_DONE) return db_.Err("remove " + key);
  IPFLY_RETURN_IF_ERROR(t.Commit());
  return std::move(*cur);
}

Result<SnapshotRecord> MetadataStore::UpdateLabels(const std::string& key, const Labels& labels,
                                                   const std::vector<std::string>& fieldpaths) {
  std::lock_guard lk(mu_);
  Txn t(db_);
  IPFLY_RETURN_IF_ERROR(t.Begun());
  auto cur = IPFLY_TRY(GetLocked(key));
  if (!cur) return NotFound("snapshot " + key + " does not exist");
  Labels updated = cur->labels;
  if (fieldpaths.empty()) {
    updated = labels;
  } else {
    for (const auto& path : fieldpaths) {
      if (path.starts_with("labels.")) {
        std::string k = path.substr(7);
        auto it = labels.find(k);
        updated[k] = it == labels.end() ? "" : it->second;
      } else if (path == "labels") {
        updated = labels;
      } else {
        return InvalidArgument("cannot update \"" + path + "\" field on snapshot \"" + key + "\"");
      }
    }
  }
  updated = DropEmpty(std::move(updated));
  int64_t now = NowNs();
  IPFLY_RETURN_IF_ERROR(WriteLabelsLocked(cur->id, updated, now));
  IPFLY_RETURN_IF_ERROR(t.Commit());
  cur->labels = std::move(updated);
  cur->updated_ns = now;
  return std::move(*cur);
}

Status MetadataStore::WriteLabelsLocked(int64_t id, const Labels& labels, int64_t updated_ns) {
  Stmt s(db_, "UPDATE snapshots SET labels = ?, updated_ns = ? WHERE id = ?");
  if (!s.prepared()) return db_.Err("update");
  s.Bind(1, LabelsJson(labels));
  s.Bind(2, updated_ns);
  s.Bind(3, id);
  if (s.Step() != SQLITE_DONE) return db_.Err("update");
  return OkStatus();
}

}  // namespace ipfly::snapshotter
