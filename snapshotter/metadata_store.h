// Snapshot metadata in SQLite: one row per snapshot (active, view or committed), crash-safe.
//
// The database runs in WAL mode with synchronous=FULL; every mutation is a single
// BEGIN IMMEDIATE ... COMMIT transaction, so after a crash a snapshot either exists completely or
// not at all. Snapshot ids come from a persistent sequence and are never reused (a directory or a
// lazy layer named by an id can never be mistaken for a later snapshot's).
//
// Semantics follow containerd's snapshot storage: keys are unique across kinds; a parent must be
// a committed snapshot; Commit turns an active snapshot into a committed one under a new name and
// keeps its id; a snapshot with children cannot be removed.
//
// Thread-safe (one connection behind a mutex).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/base/result.h"
#include "core/base/sqlite_db.h"
#include "snapshotter/lazy_layers.h"

namespace ipfly::snapshotter {

// Numeric values match containerd.services.snapshots.v1.Kind.
enum class Kind { kView = 1, kActive = 2, kCommitted = 3 };
std::string_view KindName(Kind k);  // "view" | "active" | "committed"

struct SnapshotRecord {
  int64_t id = 0;
  std::string key;     // name of a committed snapshot, key of an active/view one
  std::string parent;  // "" = none
  Kind kind = Kind::kActive;
  Labels labels;
  int64_t created_ns = 0;  // wall clock, ns since the Unix epoch (UTC)
  int64_t updated_ns = 0;
  int64_t size = 0;  // usage of committed snapshots (bytes, inodes)
  int64_t inodes = 0;
  std::optional<RemoteLayer> lazy;  // set for lazily served (remote) layers
};

// Current wall-clock time in ns since the epoch.
int64_t NowNs();

class MetadataStore {
 public:
  // Opens (creating if needed) the database file; the parent directory must exist.
  static Result<std::unique_ptr<MetadataStore>> Open(const std::string& path);
  ~MetadataStore();
  MetadataStore(const MetadataStore&) = delete;
  MetadataStore& operator=(const MetadataStore&) = delete;

  // kNotFound if there is no snapshot with this key/name.
  Result<SnapshotRecord> Get(const std::string& key);
  // The committed ancestors of `parent_key`, nearest first (empty for ""). kNotFound if missing.
  Result<std::vector<SnapshotRecord>> Chain(const std::string& parent_key);
  // Every snapshot, in key order.
  Result<std::vector<SnapshotRecord>> List();

  // Takes an id from the sequence without creating a snapshot (for lazy layers, which attach
  // before their row exists).
  Result<int64_t> ReserveId();

  struct CreateParams {
    Kind kind = Kind::kActive;
    std::string key;
    std::string parent;
    Labels labels;  // empty values are dropped
    std::optional<RemoteLayer> lazy;
    int64_t id = 0;  // 0 = next from the sequence; else a ReserveId() result
  };
  // Inserts the snapshot. `before_commit` (may be empty) runs inside the transaction after the
  // row exists (e.g. to move the snapshot's directory into place); its error aborts everything.
  // kAlreadyExists for a taken key, kNotFound for a missing parent, kInvalidArgument for a parent
  // that is not committed or a bad kind.
  Result<SnapshotRecord> Create(const CreateParams& p,
                                const std::function<Status(const SnapshotRecord&)>& before_commit);

  // Active `key` -> committed `name` with the given usage; labels are replaced by `labels`.
  // kNotFound (no key), kAlreadyExists (name taken), kFailedPrecondition (key not active).
  Result<SnapshotRecord> Commit(const std::string& key, const std::string& name, int64_t size,
                                int64_t inodes, const Labels& labels);

  // Deletes the snapshot; kNotFound, or kFailedPrecondition if it has children. Returns the row.
  Result<SnapshotRecord> Remove(const std::string& key);

  // Updates labels as containerd does: no fieldpaths = replace all labels; "labels" = replace
  // all; "labels.<k>" = set (or delete if empty) one label. Other paths are kInvalidArgument.
  Result<SnapshotRecord> UpdateLabels(const std::string& key, const Labels& labels,
                                      const std::vector<std::string>& fieldpaths);

 private:
  explicit MetadataStore(SqliteDb db) : db_(std::move(db)) {}
  Result<int64_t> NextIdLocked();
  Result<std::optional<SnapshotRecord>> GetLocked(const std::string& key);
  Status InsertLocked(const SnapshotRecord& r);
  Status WriteLabelsLocked(int64_t id, const Labels& labels, int64_t updated_ns);

  std::mutex mu_;
  SqliteDb db_;
};

}  // namespace ipfly::snapshotter
