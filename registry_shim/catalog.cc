#include "registry_shim/catalog.h"

#include <sqlite3.h>

#include <ctime>
#include <utility>

namespace ipfly::registry {
namespace {

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS blobs (
  digest TEXT PRIMARY KEY,
  cid TEXT NOT NULL,
  size INTEGER NOT NULL,
  media_type TEXT NOT NULL DEFAULT '',
  index_cid TEXT NOT NULL DEFAULT '',
  created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS repositories (
  name TEXT PRIMARY KEY,
  created INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS repo_blobs (
  repo TEXT NOT NULL,
  digest TEXT NOT NULL,
  PRIMARY KEY (repo, digest)
);
CREATE TABLE IF NOT EXISTS manifests (
  repo TEXT NOT NULL,
  digest TEXT NOT NULL,
  media_type TEXT NOT NULL,
  content BLOB NOT NULL,
  cid TEXT NOT NULL,
  subject TEXT NOT NULL DEFAULT '',
  artifact_type TEXT NOT NULL DEFAULT '',
  annotations TEXT NOT NULL DEFAULT '{}',
  created INTEGER NOT NULL,
  PRIMARY KEY (repo, digest)
);
CREATE INDEX IF NOT EXISTS manifests_subject ON manifests (repo, subject);
CREATE TABLE IF NOT EXISTS tags (
  repo TEXT NOT NULL,
  tag TEXT NOT NULL,
  digest TEXT NOT NULL,
  updated INTEGER NOT NULL,
  PRIMARY KEY (repo, tag)
);
)sql";

using Stmt = SqliteStatement;

int64_t Now() { return static_cast<int64_t>(std::time(nullptr)); }

// Runs one statement to completion (no rows expected).
Status Run(Stmt& s, const char* what) {
  if (!s.prepared()) return s.Err(what);
  int rc = s.Step();
  if (rc != SQLITE_DONE && rc != SQLITE_ROW) return s.Err(what);
  return OkStatus();
}

using Txn = SqliteTransaction;

Status EnsureRepo(const SqliteDb& db, const std::string& repo) {
  Stmt s(db, "INSERT OR IGNORE INTO repositories (name, created) VALUES (?1, ?2)");
  s.Bind(1, repo).Bind(2, Now());
  return Run(s, "insert repository");
}

Status Link(const SqliteDb& db, const std::string& repo, const std::string& digest) {
  IPFLY_RETURN_IF_ERROR(EnsureRepo(db, repo));
  Stmt s(db, "INSERT OR IGNORE INTO repo_blobs (repo, digest) VALUES (?1, ?2)");
  s.Bind(1, repo).Bind(2, digest);
  return Run(s, "link blob");
}

// Steps `s` to the end and returns its first column as text; `what` names the query in errors.
Result<std::vector<std::string>> TextColumn(Stmt& s, const char* what) {
  std::vector<std::string> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(s.Text(0));
  if (rc != SQLITE_DONE) return s.Err(what);
  return out;
}

// Steps `s` once: true if the query returned a row; `what` names the query in errors.
Result<bool> HasRow(Stmt& s, const char* what) {
  int rc = s.Step();
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return s.Err(what);
}

// A LIMIT for at most `n` rows, 0 meaning all.
int64_t SqlLimit(size_t n) { return n == 0 ? int64_t{-1} : static_cast<int64_t>(n); }

ManifestInfo ReadManifest(Stmt& s) {
  ManifestInfo m;
  m.digest = s.Text(0);
  m.media_type = s.Text(1);
  m.content = s.Blob(2);
  m.cid = s.Text(3);
  m.subject = s.Text(4);
  m.artifact_type = s.Text(5);
  m.annotations_json = s.Text(6);
  return m;
}

}  // namespace

Result<std::unique_ptr<Catalog>> Catalog::Open(const std::string& path) {
  SqliteDb db = IPFLY_TRY(SqliteDb::Open(path, "catalog"));
  IPFLY_RETURN_IF_ERROR(db.Exec("PRAGMA foreign_keys=ON"));
  IPFLY_RETURN_IF_ERROR(db.Exec(kSchema));
  return std::unique_ptr<Catalog>(new Catalog(std::move(db)));
}

Catalog::~Catalog() = default;

Result<std::optional<BlobInfo>> Catalog::GetBlob(const std::string& digest) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT cid, size, media_type, index_cid FROM blobs WHERE digest = ?1");
  if (!s.prepared()) return s.Err("get blob");
  s.Bind(1, digest);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<BlobInfo>();
  if (rc != SQLITE_ROW) return s.Err("get blob");
  BlobInfo b;
  b.digest = digest;
  b.cid = s.Text(0);
  b.size = static_cast<uint64_t>(s.Int(1));
  b.media_type = s.Text(2);
  b.index_cid = s.Text(3);
  return std::optional<BlobInfo>(std::move(b));
}

Status Catalog::PutBlob(const BlobInfo& blob, const std::string& repo) {
  std::lock_guard lock(mu_);
  Txn t(db_);
  IPFLY_RETURN_IF_ERROR(t.Begun());
  {
    Stmt s(db_,
           "INSERT INTO blobs (digest, cid, size, media_type, index_cid, created) "
           "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT(digest) DO UPDATE SET "
           "index_cid = CASE WHEN blobs.index_cid = '' THEN excluded.index_cid "
           "ELSE blobs.index_cid END, "
           "media_type = CASE WHEN blobs.media_type = '' THEN excluded.media_type "
           "ELSE blobs.media_type END");
    s.Bind(1, blob.digest)
        .Bind(2, blob.cid)
        .Bind(3, static_cast<int64_t>(blob.size))
        .Bind(4, blob.media_type)
        .Bind(5, blob.index_cid)
        .Bind(6, Now());
    IPFLY_RETURN_IF_ERROR(Run(s, "put blob"));
  }
  if (!repo.empty()) IPFLY_RETURN_IF_ERROR(Link(db_, repo, blob.digest));
  return t.Commit();
}

Status Catalog::LinkBlob(const std::string& repo, const std::string& digest) {
  std::lock_guard lock(mu_);
  Txn t(db_);
  IPFLY_RETURN_IF_ERROR(t.Begun());
  IPFLY_RETURN_IF_ERROR(Link(db_, repo, digest));
  return t.Commit();
}

Status Catalog::UnlinkBlob(const std::string& repo, const std::string& digest) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "DELETE FROM repo_blobs WHERE repo = ?1 AND digest = ?2");
  s.Bind(1, repo).Bind(2, digest);
  return Run(s, "unlink blob");
}

Result<bool> Catalog::RepoHasBlob(const std::string& repo, const std::string& digest) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT 1 FROM repo_blobs WHERE repo = ?1 AND digest = ?2");
  if (!s.prepared()) return s.Err("repo blob");
  s.Bind(1, repo).Bind(2, digest);
  return HasRow(s, "repo blob");
}

Result<std::optional<ManifestInfo>> Catalog::GetManifest(const std::string& repo,
                                                         const std::string& digest) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "SELECT digest, media_type, content, cid, subject, artifact_type, annotations "
         "FROM manifests WHERE repo = ?1 AND digest = ?2");
  if (!s.prepared()) return s.Err("get manifest");
  s.Bind(1, repo).Bind(2, digest);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<ManifestInfo>();
  if (rc != SQLITE_ROW) return s.Err("get manifest");
  return std::optional<ManifestInfo>(ReadManifest(s));
}

Result<std::optional<std::string>> Catalog::ResolveTag(const std::string& repo,
                                                       const std::string& tag) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT digest FROM tags WHERE repo = ?1 AND tag = ?2");
  if (!s.prepared()) return s.Err("resolve tag");
  s.Bind(1, repo).Bind(2, tag);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return std::optional<std::string>();
  if (rc != SQLITE_ROW) return s.Err("resolve tag");
  return std::optional<std::string>(s.Text(0));
}

Result<std::optional<std::pair<std::string, int64_t>>> Catalog::ResolveTagWithTime(
    const std::string& repo, const std::string& tag) {
  using Out = std::optional<std::pair<std::string, int64_t>>;
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT digest, updated FROM tags WHERE repo = ?1 AND tag = ?2");
  if (!s.prepared()) return s.Err("resolve tag");
  s.Bind(1, repo).Bind(2, tag);
  int rc = s.Step();
  if (rc == SQLITE_DONE) return Out();
  if (rc != SQLITE_ROW) return s.Err("resolve tag");
  return Out(std::make_pair(s.Text(0), s.Int(1)));
}

Status Catalog::PutManifest(
    const std::string& repo, const ManifestInfo& m, const std::string& tag,
    const std::vector<std::string>& blob_digests,
    const std::vector<std::pair<std::string, std::string>>& blob_media_types) {
  std::lock_guard lock(mu_);
  Txn t(db_);
  IPFLY_RETURN_IF_ERROR(t.Begun());
  IPFLY_RETURN_IF_ERROR(EnsureRepo(db_, repo));
  {
    Stmt s(db_,
           "INSERT OR REPLACE INTO manifests (repo, digest, media_type, content, cid, subject, "
           "artifact_type, annotations, created) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
    s.Bind(1, repo)
        .Bind(2, m.digest)
        .Bind(3, m.media_type)
        .BindBlob(4, m.content)
        .Bind(5, m.cid)
        .Bind(6, m.subject)
        .Bind(7, m.artifact_type)
        .Bind(8, m.annotations_json.empty() ? std::string("{}") : m.annotations_json)
        .Bind(9, Now());
    IPFLY_RETURN_IF_ERROR(Run(s, "put manifest"));
  }
  if (!tag.empty()) {
    Stmt s(db_, "INSERT OR REPLACE INTO tags (repo, tag, digest, updated) VALUES (?1, ?2, ?3, ?4)");
    s.Bind(1, repo).Bind(2, tag).Bind(3, m.digest).Bind(4, Now());
    IPFLY_RETURN_IF_ERROR(Run(s, "put tag"));
  }
  for (const auto& d : blob_digests) IPFLY_RETURN_IF_ERROR(Link(db_, repo, d));
  for (const auto& [d, mt] : blob_media_types) {
    Stmt s(db_, "UPDATE blobs SET media_type = ?2 WHERE digest = ?1 AND media_type = ''");
    s.Bind(1, d).Bind(2, mt);
    IPFLY_RETURN_IF_ERROR(Run(s, "blob media type"));
  }
  return t.Commit();
}

Result<bool> Catalog::DeleteManifest(const std::string& repo, const std::string& digest) {
  std::lock_guard lock(mu_);
  Txn t(db_);
  IPFLY_RETURN_IF_ERROR(t.Begun());
  Stmt s(db_, "DELETE FROM manifests WHERE repo = ?1 AND digest = ?2");
  s.Bind(1, repo).Bind(2, digest);
  IPFLY_RETURN_IF_ERROR(Run(s, "delete manifest"));
  bool found = db_.Changes() > 0;
  Stmt s2(db_, "DELETE FROM tags WHERE repo = ?1 AND digest = ?2");
  s2.Bind(1, repo).Bind(2, digest);
  IPFLY_RETURN_IF_ERROR(Run(s2, "delete tags"));
  IPFLY_RETURN_IF_ERROR(t.Commit());
  return found;
}

Result<bool> Catalog::DeleteTag(const std::string& repo, const std::string& tag) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "DELETE FROM tags WHERE repo = ?1 AND tag = ?2");
  s.Bind(1, repo).Bind(2, tag);
  IPFLY_RETURN_IF_ERROR(Run(s, "delete tag"));
  return db_.Changes() > 0;
}

Result<std::vector<std::string>> Catalog::ListTags(const std::string& repo, const std::string& last,
                                                   size_t n) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT tag FROM tags WHERE repo = ?1 AND tag > ?2 ORDER BY tag LIMIT ?3");
  if (!s.prepared()) return s.Err("list tags");
  s.Bind(1, repo).Bind(2, last).Bind(3, SqlLimit(n));
  return TextColumn(s, "list tags");
}

Result<std::vector<std::string>> Catalog::ListRepositories(const std::string& last, size_t n) {
  std::lock_guard lock(mu_);
  // Only repositories that hold at least one manifest are listed (an upload alone does not
  // create a visible repository).
  Stmt s(db_,
         "SELECT name FROM repositories r WHERE name > ?1 AND name NOT LIKE 'ipfs/%' AND EXISTS "
         "(SELECT 1 FROM manifests m WHERE m.repo = r.name) ORDER BY name LIMIT ?2");
  if (!s.prepared()) return s.Err("list repositories");
  s.Bind(1, last).Bind(2, SqlLimit(n));
  return TextColumn(s, "list repositories");
}

Result<std::vector<std::string>> Catalog::SearchRepositories(const std::string& term, size_t n) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "SELECT name FROM repositories r WHERE instr(name, ?1) > 0 AND name NOT LIKE 'ipfs/%' "
         "AND EXISTS (SELECT 1 FROM manifests m WHERE m.repo = r.name) ORDER BY name LIMIT ?2");
  if (!s.prepared()) return s.Err("search");
  s.Bind(1, term).Bind(2, SqlLimit(n));
  return TextColumn(s, "search");
}

Result<bool> Catalog::RepoExists(const std::string& repo) {
  std::lock_guard lock(mu_);
  Stmt s(db_, "SELECT 1 FROM repositories WHERE name = ?1");
  if (!s.prepared()) return s.Err("repo exists");
  s.Bind(1, repo);
  return HasRow(s, "repo exists");
}

Result<std::vector<ManifestInfo>> Catalog::Referrers(const std::string& repo,
                                                     const std::string& digest) {
  std::lock_guard lock(mu_);
  Stmt s(db_,
         "SELECT digest, media_type, content, cid, subject, artifact_type, annotations "
         "FROM manifests WHERE repo = ?1 AND subject = ?2 ORDER BY digest");
  if (!s.prepared()) return s.Err("referrers");
  s.Bind(1, repo).Bind(2, digest);
  std::vector<ManifestInfo> out;
  int rc;
  while ((rc = s.Step()) == SQLITE_ROW) out.push_back(ReadManifest(s));
  if (rc != SQLITE_DONE) return s.Err("referrers");
  return out;
}

}  // namespace ipfly::registry
