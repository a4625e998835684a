// The snapshotter proper: containerd's snapshot semantics over overlayfs, with lazily served
// layers through LazyLayers. Transport-free (the gRPC adapter is grpc_server.h), so unit tests and
// the gRPC layer share one implementation.
//
// On-disk layout under root:
//   metadata.db            SQLite (see metadata_store.h)
//   snapshots/<id>/fs      the snapshot's own layer (upperdir of an active snapshot)
//   snapshots/<id>/work    overlay workdir (active snapshots only)
// Lazy snapshots have no directory here: their lowerdir is the LazyLayers directory.
//
// Mounts follow containerd's overlayfs snapshotter:
//   no parent                 bind <fs> (rw for active, ro for view)
//   view with one parent      ro bind of the parent's directory
//   view with parents         overlay, lowerdir only
//   active with parents       overlay, upperdir + workdir + lowerdir (nearest parent first)
//
// Lazy layers (see lazy_layers.h): a Prepare carrying containerd.io/snapshot.ref asks LazyLayers
// to resolve the layer; on success a committed snapshot named by the ref is created, attached,
// and kAlreadyExists is returned (containerd then finds it by List). Any failure is counted as a
// fallback with a reason and the Prepare continues as an ordinary one.
//
// Thread-safe. Errors use Errc values the gRPC layer maps to containerd's errdefs codes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "core/base/result.h"
#include "snapshotter/filters.h"
#include "snapshotter/lazy_layers.h"
#include "snapshotter/metadata_store.h"
#include "snapshotter/metrics.h"

namespace ipfly::snapshotter {

inline constexpr const char* kSnapshotRefLabel = "containerd.io/snapshot.ref";

struct MountSpec {
  std::string type;
  std::string source;
  std::vector<std::string> options;
};

struct UsageInfo {
  int64_t size = 0;
  int64_t inodes = 0;
};

class SnapshotService {
 public:
  // Opens (creating) root, its metadata and snapshots/ dir. `lazy` may be null (no lazy layers);
  // it must outlive the service. Re-attaches every lazy snapshot found (failures are logged).
  static Result<std::unique_ptr<SnapshotService>> Open(const std::string& root, LazyLayers* lazy);

  Result<std::vector<MountSpec>> Prepare(const std::string& key, const std::string& parent,
                                         const Labels& labels);
  Result<std::vector<MountSpec>> View(const std::string& key, const std::string& parent,
                                      const Labels& labels);
  Result<std::vector<MountSpec>> Mounts(const std::string& key);
  Status Commit(const std::string& name, const std::string& key, const Labels& labels);
  Status Remove(const std::string& key);
  Result<SnapshotRecord> Stat(const std::string& key);
  Result<SnapshotRecord> Update(const std::string& name, const Labels& labels,
                                const std::vector<std::string>& fieldpaths);
  // Calls fn for every snapshot matching any of the filters (kInvalidArgument for bad filters).
  Status Walk(const std::vector<std::string>& filters,
              const std::function<Status(const SnapshotRecord&)>& fn);
  Result<UsageInfo> Usage(const std::string& key);
  // Removes snapshot directories no snapshot refers to, and detaches orphaned lazy layers.
  Status Cleanup();

  Metrics& metrics() { return metrics_; }
  LazyLayers* lazy() { return lazy_; }
  MetadataStore& store() { return *store_; }
  const std::string& root() const { return root_; }

 private:
  SnapshotService() = default;
  Result<std::vector<MountSpec>> Create(Kind kind, const std::string& key,
                                        const std::string& parent, const Labels& labels);
  // Tries to serve the layer of a Prepare with snapshot.ref lazily: an error (kAlreadyExists on
  // success) to return to the caller, or nullopt to continue as an ordinary Prepare.
  std::optional<Error> TryLazy(const std::string& key, const std::string& parent,
                               const Labels& labels);
  void Fallback(const std::string& ref, const std::string& reason, const std::string& why);
  // Lowerdir of a committed snapshot: its fs dir, or the (re-)attached lazy directory.
  Result<std::string> LayerDir(const SnapshotRecord& r);
  Result<std::vector<MountSpec>> MountsFor(const SnapshotRecord& r,
                                           const std::vector<std::string>& lowerdirs);
  Result<std::vector<std::string>> LowerDirs(const std::vector<SnapshotRecord>& chain);
  std::string SnapshotDir(int64_t id) const;
  void ReattachLazy();
  // Tells LazyLayers which lazy layers are in the chain of an active snapshot or a view (their
  // span caches are never evicted by the cap). After every change of that set: Open, Create
  // with a parent, Commit, Remove of an active snapshot or view.
  void UpdateLazyInUse();

  std::string root_;
  std::unique_ptr<MetadataStore> store_;
  LazyLayers* lazy_ = nullptr;
  Metrics metrics_;
  bool index_off_ = false;
  // Shared by Create (temp dir -> snapshots/<id>), exclusive for Cleanup.
  std::shared_mutex dirs_mu_;
  std::mutex in_use_mu_;  // serializes UpdateLazyInUse
};

// Disk usage like containerd's fs.DiskUsage: allocated bytes (st_blocks * 512) and inode count
// of a tree, hard links counted once.
Result<UsageInfo> DiskUsage(const std::string& dir);

}  // namespace ipfly::snapshotter
