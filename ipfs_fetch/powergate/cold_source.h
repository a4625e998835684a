// PowergateSource: the cold block source, last in the Fetcher's chain. It answers for blocks
// no IPFS source has, by asking Powergate about the object they belong to (the read's root,
// block_source.h ReadRootScope; the block itself when there is no scope):
//
//   CidInfo(root)
//   ├─ hot storage enabled → with [powergate] ipfs_proxy: the block through Powergate's IPFS
//   │    reverse proxy (Kubo RPC block/get with x-ipfs-ffs-auth), verified against its CID;
//   │    otherwise Get(root): the whole object is streamed, re-imported with the configured
//   │    import profile and accepted only if the recomputed root CID equals root; then all its
//   │    blocks go to the landing store (the Fetcher's cache) and blocks are answered from there.
//   │    Corrupt or truncated data gives kCorrupt and nothing is stored.
//   ├─ cold only (Filecoin deals, hot disabled) → a thaw: ApplyStorageConfig with hot.enabled,
//   │    hot.allow_unfreeze, hot.unfreeze_max_price = [powergate] unfreeze_max_price, override.
//   │    ONE job per object (or the one Powergate already runs for it, adopted); persisted in
//   │    state_dir/jobs.json (atomic rename) and watched by a background thread
//   │    (WatchStorageJobs; StorageJob polls every job_poll_ms). While it runs, reads fail at
//   │    once with kUnavailable "<root> is being retrieved from Filecoin, job <id> (<state>)":
//   │    nothing blocks for the minutes or hours a retrieval takes; once the job is SUCCESS
//   │    the object is hot and reads succeed.
//   │    unfreeze_max_price = 0 → kFailedPrecondition (thaws disabled); a FAILED or CANCELED
//   │    job → kFailedPrecondition naming it (no automatic paid retry: `ipfly thaw CID`).
//   └─ no storage → kNotFound.
// A restart (a new source over the same state_dir) resumes watching unfinished jobs.
//
// Thread safety: all methods are thread-safe. Concurrent Gets of one object share one CidInfo /
// whole-object Get (the others wait for it until their deadline). One background thread (the job
// watcher), joined in the destructor.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "core/base/config.h"
#include "core/unixfs/importer.h"
#include "ipfs_fetch/block_source.h"
#include "ipfs_fetch/http_client.h"
#include "ipfs_fetch/kubo_rpc.h"
#include "ipfs_fetch/powergate/client.h"

namespace ipfly::fetch::powergate {

struct ColdSourceOptions {
  PowergateConfig config;         // address, ipfs_proxy, unfreeze_max_price, job_poll_ms, state_dir
  unixfs::ImportProfile profile;  // how our objects were imported (re-import check of Get)
  // Where whole objects fetched with Get are stored (normally the Fetcher's disk cache; not
  // owned). Null: an in-memory store owned by the source.
  BlockStore* landing = nullptr;
  std::shared_ptr<HttpClient> http;  // for the IPFS proxy; null = HttpClient::Default()
  // A hot answer of CidInfo is trusted for this long before it is asked again.
  std::chrono::milliseconds hot_ttl{60'000};
  uint64_t max_object_bytes = 8ull << 30;  // Get of a bigger object gives kTooLarge
  bool watch_jobs = true;                  // run the job watcher thread (the CLI does not)
};

// One thaw job as persisted and reported.
struct ThawJob {
  std::string cid;  // the object
  std::string job_id;
  pb::JobStatus status = pb::JOB_STATUS_UNSPECIFIED;
  std::string error_cause;
  int64_t started_unix = 0;
  int64_t updated_unix = 0;
};

struct ColdSourceStats {
  uint64_t gets = 0;
  uint64_t proxy_blocks = 0;
  uint64_t objects_loaded = 0;  // whole objects fetched with Get and accepted
  uint64_t object_bytes = 0;
  uint64_t rejected = 0;  // Get answers whose re-import did not match (corrupt / truncated)
  uint64_t thaws_started = 0;
  uint64_t loading = 0;  // objects being streamed right now
  std::vector<ThawJob> jobs;
};

class PowergateSource : public BlockSource {
 public:
  // Loads state_dir/jobs.json (kIo / kCorrupt naming the file) and starts the watcher.
  static Result<std::unique_ptr<PowergateSource>> Open(std::shared_ptr<Client> client,
                                                       ColdSourceOptions options);
  ~PowergateSource() override;

  std::string name() const override { return "powergate " + client_->address(); }
  Result<Block> Get(const mf::Cid& cid, Deadline deadline) override;
  // With an IPFS proxy and `root` hot: the proxy's stream (KuboRpcSource::StreamDag: verified
  // cat for raw-leaf DAGs, any range), one request instead of one per block. Thaw semantics and
  // errors as Get. kUnsupported without a proxy, or when the object was loaded with Get.
  Status StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                   const std::function<Status(const Block&)>& on_block) override;
  std::string ExtraMetricsText() const override;

  // Starts a thaw of `root` now (explicit `ipfly thaw`), even after a failed one. Returns the
  // job; status SUCCESS with an empty job_id when the object is already hot.
  Result<ThawJob> Thaw(const mf::Cid& root, Deadline deadline);

  std::vector<ThawJob> Jobs() const;
  ColdSourceStats stats() const;
  Client& client() { return *client_; }

  // jobs.json of a state directory (for `ipfly status` without a running source).
  static Result<std::vector<ThawJob>> LoadJobs(const std::string& state_dir);

 private:
  struct Object;
  PowergateSource(std::shared_ptr<Client> client, ColdSourceOptions options);

  std::shared_ptr<Object> ObjectFor(const mf::Cid& root);
  // Makes `obj` readable (hot and, without a proxy, loaded). Errors per the header comment.
  Status EnsureReadable(Object& obj, Deadline deadline);
  // One round of the state machine, run by the single worker of `obj` (no locks held).
  Status Advance(Object& obj, Deadline deadline, bool* loaded, bool* hot);
  Status LoadWhole(const mf::Cid& root, Deadline deadline);
  Result<ThawJob> StartThaw(const mf::Cid& root, const pb::CidInfo& info, Deadline deadline);
  // Records `job` (persisted) and wakes the watcher.
  void RecordJob(const ThawJob& job);
  // Follows a job Powergate already runs for the object (CidInfo executing/queued), if any.
  std::optional<ThawJob> AdoptRunning(const std::string& root_str, const pb::CidInfo& info);
  std::optional<ThawJob> JobFor(const std::string& cid) const;
  void UpdateJob(const pb::StorageJob& job);
  Status SaveJobsLocked();
  void WatchLoop();

  std::shared_ptr<Client> client_;
  const ColdSourceOptions options_;
  std::string state_file_;
  std::unique_ptr<BlockStore> owned_landing_;
  BlockStore* landing_;
  std::unique_ptr<KuboRpcSource> proxy_;

  mutable std::mutex objects_mu_;
  std::unordered_map<mf::Cid, std::shared_ptr<Object>> objects_;

  mutable std::mutex jobs_mu_;
  std::condition_variable jobs_cv_;
  std::map<std::string, ThawJob> jobs_;  // by object CID
  bool stop_ = false;
  bool new_job_ = false;                      // wakes the watcher early
  CallCanceller* watch_canceller_ = nullptr;  // the running watch, guarded by jobs_mu_

  std::atomic<uint64_t> gets_{0}, proxy_blocks_{0}, objects_loaded_{0}, object_bytes_{0},
      rejected_{0}, thaws_started_{0}, loading_{0};

  std::thread watcher_;  // last: joined first
};

}  // namespace ipfly::fetch::powergate
