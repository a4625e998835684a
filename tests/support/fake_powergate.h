// FakePowergate: a stand-in for powd (Powergate's daemon) in tests and benchmarks, since a real
// one needs a Lotus devnet. It speaks the same wire contract as powergate.user.v1.UserService
// over real gRPC on 127.0.0.1 (ipfs_fetch/powergate/user.proto) and the documented behaviour
// (../../../shared/notes/powergate.md):
//   - every call needs metadata x-ffs-token: missing → PERMISSION_DENIED "auth token can't be
//     empty"; unknown → PERMISSION_DENIED;
//   - objects are UnixFS DAGs made with ipfly's own importer (AddObject), each with a hot and a
//     cold flag; CidInfo reports them (NOT_FOUND for unknown CIDs);
//   - Get streams the object in 32 KiB chunks, only when hot; cold only → UNKNOWN "cid disabled
//     in hot storage"; data modes return corrupted or truncated bytes;
//   - ApplyStorageConfig returns a job id; a config with hot.enabled for a cold-only object is a
//     thaw, refused (job FAILED) without allow_unfreeze; the job goes QUEUED → EXECUTING →
//     SUCCESS (object hot) after the configured thaw time, or FAILED when thaws are set to fail,
//     or stays EXECUTING until CompleteJob / FailJob / CancelJob when held;
//   - StorageJob / WatchStorageJobs (current state first, then every change, until all final);
//   - StageCid of a known object marks it staged; an unknown CID is pinned "from the IPFS
//     network" when SetNetwork gave a way to get its bytes (imported with the profile, accepted
//     only if the CID matches), else UNKNOWN "not found"; DefaultStorageConfig: hot off, cold on;
//   - an HTTP Kubo-RPC proxy (POST /api/v0/block/get, /api/v0/cat, /api/v0/version) that needs
//     header x-ipfs-ffs-auth with a valid token (403 otherwise) and serves hot objects only.
// Thread-safe. Everything is stopped and joined in the destructor.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/result.h"
#include "core/multiformats/cid.h"

namespace ipfly::testing {

struct FakePowergateOptions {
  std::vector<std::string> tokens = {"test-token"};
  std::string profile = "kubo-v1";  // import profile of AddObject
  std::chrono::milliseconds thaw_time{300};
  bool http_proxy = true;
  int grpc_port = 0;  // 0 = any free port
  int http_port = 0;
  // TLS on the gRPC port when both are set (PEM text), as powd behind a TLS endpoint.
  std::string tls_cert_pem;
  std::string tls_key_pem;
};

class FakePowergate {
 public:
  enum class DataMode { kGood, kCorrupt, kTruncated };
  enum class ThawMode { kSucceed, kFail, kHold };

  static Result<std::unique_ptr<FakePowergate>> Start(FakePowergateOptions options = {});
  ~FakePowergate();
  FakePowergate(const FakePowergate&) = delete;
  FakePowergate& operator=(const FakePowergate&) = delete;

  std::string address() const;    // "127.0.0.1:<port>" (gRPC)
  std::string proxy_url() const;  // "http://127.0.0.1:<port>" ("" without the proxy)

  // Imports `data` as a UnixFS file and stores it with the given storage state.
  Result<mf::Cid> AddObject(ByteView data, bool hot, bool cold);
  Status SetState(const mf::Cid& cid, bool hot, bool cold);
  bool IsHot(const mf::Cid& cid) const;

  // "The IPFS network" Powergate's node pins from on StageCid of a CID it does not hold: the
  // file bytes of a CID (any error = not found on the network).
  using NetworkFetch = std::function<Result<Bytes>(const std::string& cid)>;
  void SetNetwork(NetworkFetch fetch);

  // What the fake holds for a CID (nullopt if unknown): storage state and the last applied
  // storage config.
  struct ObjectInfo {
    bool hot = false, cold = false, staged = false;
    bool has_config = false;                       // a storage config was applied
    bool config_hot = false, config_cold = false;  // its hot.enabled / cold.enabled
  };
  std::optional<ObjectInfo> Inspect(const std::string& cid) const;
  // Every CID a StageCid call succeeded for, in call order (repeats kept).
  std::vector<std::string> StagedCids() const;

  void SetDataMode(DataMode mode);
  void SetThawMode(ThawMode mode, std::string fail_cause = "retrieval deal failed");
  void SetThawTime(std::chrono::milliseconds t);
  // Ends a held (or running) job now. kNotFound for an unknown id.
  Status CompleteJob(const std::string& job_id);
  Status FailJob(const std::string& job_id, const std::string& cause);
  Status CancelJob(const std::string& job_id);
  std::vector<std::string> JobIds() const;
  // "QUEUED", "EXECUTING", ... ("" if unknown).
  std::string JobState(const std::string& job_id) const;

  struct Counters {
    uint64_t cid_info = 0, get = 0, apply = 0, thaws = 0, storage_job = 0, watch = 0, stage_cid = 0,
             proxy_requests = 0, denied = 0;
  };
  Counters counters() const;

  struct Impl;

 private:
  explicit FakePowergate(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfly::testing
