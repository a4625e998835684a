// The registry catalog: repositories, tags, manifests and blobs (digest -> CID) in SQLite.
//
// Storage: one SQLite database in WAL mode with synchronous=FULL, so that every committed change
// survives a crash or power loss and a crash never leaves a half-applied change (each mutation is
// one transaction). Blob bytes live in the IPFS block store, never here; manifests are small and
// are kept here verbatim (and also imported into the block store).
//
// Visibility rules the server relies on:
//   * a blob row is written only after its bytes were digest-checked and imported;
//   * a repository sees a blob only through a repo_blobs link (upload, mount, manifest, mirror);
//   * a manifest row and its tag are written in one transaction.
//
// Thread safety: all methods are thread-safe (one connection behind a mutex; every statement is
// short). Errors: kIo for SQLite failures (message carries sqlite3_errmsg).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/result.h"
#include "core/base/sqlite_db.h"

namespace ipfly::registry {

struct BlobInfo {
  std::string digest;  // "sha256:<hex>"
  std::string cid;     // UnixFS file root of the blob bytes
  uint64_t size = 0;
  std::string media_type;  // from the first manifest that referenced it ("" = unknown yet)
  std::string index_cid;   // layer index ("" = none: not a layer, or not indexable)
};

struct ManifestInfo {
  std::string digest;
  std::string media_type;
  std::string content;  // the exact bytes that were pushed
  std::string cid;      // the bytes in IPFS
  std::string subject;  // digest of the `subject` descriptor ("" = none)
  std::string artifact_type;
  std::string annotations_json;  // "{}" when none (used by the referrers API)
};

class Catalog {
 public:
  // Opens or creates <path>. kIo on failure.
  static Result<std::unique_ptr<Catalog>> Open(const std::string& path);
  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  Result<std::optional<BlobInfo>> GetBlob(const std::string& digest);
  // Inserts the blob (if new) and links it into `repo` (if non-empty), in one transaction.
  Status PutBlob(const BlobInfo& blob, const std::string& repo);
  Status LinkBlob(const std::string& repo, const std::string& digest);
  Status UnlinkBlob(const std::string& repo, const std::string& digest);
  Result<bool> RepoHasBlob(const std::string& repo, const std::string& digest);

  Result<std::optional<ManifestInfo>> GetManifest(const std::string& repo,
                                                  const std::string& digest);
  Result<std::optional<std::string>> ResolveTag(const std::string& repo, const std::string& tag);
  // The tag's digest and when it was last set (unix seconds).
  Result<std::optional<std::pair<std::string, int64_t>>> ResolveTagWithTime(const std::string& repo,
                                                                            const std::string& tag);
  // Stores the manifest in `repo`, points `tag` at it (if non-empty), links `blob_digests` into the
  // repository and records `layer_media_types` (digest, media type) for blobs that have none yet.
  Status PutManifest(const std::string& repo, const ManifestInfo& m, const std::string& tag,
                     const std::vector<std::string>& blob_digests,
                     const std::vector<std::pair<std::string, std::string>>& blob_media_types);
  // Deletes the manifest and every tag pointing at it. Returns false if it was not there.
  Result<bool> DeleteManifest(const std::string& repo, const std::string& digest);
  Result<bool> DeleteTag(const std::string& repo, const std::string& tag);

  // Sorted lexically; entries > `last`; at most `n` (0 = all).
  Result<std::vector<std::string>> ListTags(const std::string& repo, const std::string& last,
                                            size_t n);
  Result<std::vector<std::string>> ListRepositories(const std::string& last, size_t n);
  Result<bool> RepoExists(const std::string& repo);
  // Repositories with at least one manifest whose name contains `term` (ipfs/ views excluded).
  Result<std::vector<std::string>> SearchRepositories(const std::string& term, size_t n);
  // Manifests in `repo` whose subject is `digest`.
  Result<std::vector<ManifestInfo>> Referrers(const std::string& repo, const std::string& digest);

 private:
  explicit Catalog(SqliteDb db) : db_(std::move(db)) {}

  std::mutex mu_;
  SqliteDb db_;
};

}  // namespace ipfly::registry
