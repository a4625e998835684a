// Client for Powergate's user API (powergate.user.v1.UserService, gRPC), the subset ipfly needs:
// CidInfo, Get (server stream), ApplyStorageConfig, StorageJob, WatchStorageJobs, StageCid,
// DefaultStorageConfig. Wire contract: ../../../shared/notes/powergate.md and user.proto here.
//
// Auth: the user token travels in the metadata key `x-ffs-token` on every call. It is never
// logged and never appears in an error message. Without a token the server answers
// PermissionDenied "auth token can't be empty".
// Transport: plaintext by default; TLS (system roots or a CA file) when configured.
// Deadlines: every call carries one: min(caller's deadline, now + the per-kind cap below), so a
// silent server never blocks a caller forever.
//
// gRPC status → Errc (messages start with "powergate <address>: <what>"):
//   PERMISSION_DENIED / UNAUTHENTICATED        → kPermissionDenied
//   NOT_FOUND, or UNKNOWN saying "not found"  → kNotFound
//   UNKNOWN "cid disabled in hot storage"      → kFailedPrecondition (cold only: thaw first)
//   DEADLINE_EXCEEDED                          → kTimeout
//   UNAVAILABLE / RESOURCE_EXHAUSTED / ABORTED → kUnavailable (retryable)
//   CANCELLED → kCancelled; INVALID_ARGUMENT / OUT_OF_RANGE → kInvalidArgument;
//   FAILED_PRECONDITION → kFailedPrecondition; UNIMPLEMENTED → kUnimplemented;
//   anything else (Powergate's plain Go errors arrive as UNKNOWN)       → kInternal
//
// Thread safety: all methods may be called concurrently (one channel, one stub).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/config.h"
#include "core/base/result.h"
#include "ipfs_fetch/block_source.h"
#include "ipfs_fetch/powergate/user.grpc.pb.h"
#include "ipfs_fetch/powergate/user.pb.h"

namespace grpc {
class Channel;
class ClientContext;
class Status;
}  // namespace grpc

namespace ipfly::fetch::powergate {

namespace pb = ::powergate::user::v1;

// Metadata key of the user token (gRPC lowercases keys; Powergate reads "X-ffs-Token").
inline constexpr std::string_view kTokenMetadata = "x-ffs-token";
// HTTP header of Powergate's IPFS reverse proxy (Kubo RPC on :6002).
inline constexpr std::string_view kProxyAuthHeader = "x-ipfs-ffs-auth";

// "QUEUED", "EXECUTING", "SUCCESS", ... (JobStatus without its prefix).
std::string_view JobStatusName(pb::JobStatus s);
// Parses the names above; JOB_STATUS_UNSPECIFIED for anything else.
pb::JobStatus JobStatusFromName(std::string_view name);
// FAILED, CANCELED, SUCCESS.
bool IsFinal(pb::JobStatus s);

struct ClientOptions {
  std::string address;  // "host:port"
  std::string token;    // may be empty (the server then refuses every call)
  bool tls = false;
  std::string tls_ca_pem;                             // PEM text ("" = system roots)
  std::chrono::milliseconds call_timeout{30'000};     // unary calls
  std::chrono::milliseconds stream_timeout{600'000};  // Get / WatchStorageJobs
};

// Lets another thread cancel a running streaming call (WatchStorageJobs, Get).
class CallCanceller {
 public:
  void Cancel();
  bool cancelled() const;

 private:
  friend class Client;
  bool Attach(grpc::ClientContext* ctx);  // false if already cancelled
  void Detach();
  mutable std::mutex mu_;
  grpc::ClientContext* ctx_ = nullptr;
  bool cancelled_ = false;
};

class Client {
 public:
  explicit Client(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Options from the [powergate] section: the token is config.token, else the environment
  // variable named by token_env; tls_ca is read here (kIo naming the file if unreadable).
  // kInvalidArgument if config.address is empty.
  static Result<std::unique_ptr<Client>> FromConfig(const PowergateConfig& config);

  const std::string& address() const { return options_.address; }
  bool has_token() const { return !options_.token.empty(); }
  // The token, for the IPFS proxy header. Callers must never log it.
  const std::string& token() const { return options_.token; }

  Result<pb::CidInfo> CidInfo(const std::string& cid, Deadline deadline);
  Result<pb::StorageConfig> DefaultStorageConfig(Deadline deadline);
  Status StageCid(const std::string& cid, Deadline deadline);
  // ApplyStorageConfig with has_config = true and, when `override_config`, override_config =
  // has_override_config = true. Returns the job id.
  Result<std::string> ApplyStorageConfig(const std::string& cid, const pb::StorageConfig& config,
                                         bool override_config, Deadline deadline);
  Result<pb::StorageJob> StorageJob(const std::string& job_id, Deadline deadline);
  // Streams job updates to `on_update` until it returns false (OK), the stream ends (OK), the
  // deadline passes (kTimeout) or `canceller` is cancelled (kCancelled).
  Status WatchStorageJobs(const std::vector<std::string>& job_ids, Deadline deadline,
                          const std::function<bool(const pb::StorageJob&)>& on_update,
                          CallCanceller* canceller = nullptr);
  // Streams the whole object (Powergate sends 32 KiB chunks). UNVERIFIED bytes: the caller must
  // check them (re-import and compare the root CID). An error from `on_chunk` stops the stream.
  Status Get(const std::string& cid, Deadline deadline,
             const std::function<Status(ByteView)>& on_chunk, CallCanceller* canceller = nullptr);

 private:
  void Prepare(grpc::ClientContext* ctx, Deadline deadline, std::chrono::milliseconds cap) const;
  Error Map(const grpc::Status& s, std::string_view what) const;

  ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<pb::UserService::Stub> stub_;
};

// The mapping described in the header comment (exposed for tests).
Error MapGrpcStatus(int code, std::string_view message, std::string_view context);

}  // namespace ipfly::fetch::powergate
