// Block sources over IPFS Trustless Gateways (ipfs/specs trustless-gateway; notes/ipfs.md A4).
//
// GatewaySource talks to one gateway base URL:
//   Get        GET {base}/ipfs/{cid}?format=raw        Accept: application/vnd.ipld.raw
//   StreamDag  GET {base}/ipfs/{root}?format=car&dag-scope=entity[&entity-bytes=from:to]
//              Accept: application/vnd.ipld.car; version=1; order=dfs; dups=y
// Every block is verified (Block::Verify) before it is returned or handed to on_block.
//
// Error mapping (BlockSource contract, block_source.h), all messages name the gateway:
//   HTTP 404/410/451/412                → kNotFound
//   HTTP 429/500/502/503/504/408        → kUnavailable; a Retry-After header is carried as a hint
//                                         readable with RetryAfterHint() (retry_hint.h)
//   HTTP 400 → kInvalidArgument; 406/501 → kUnsupported; other statuses → kUnavailable
//   connection refused/reset, truncated body, stall (no byte for stall_timeout) → kUnavailable
//   deadline passed                      → kTimeout
//   body > 2 MiB (Get)                   → kTooLarge
//   hash mismatch                        → kCorrupt ("gateway URL sent bad bytes for CID: ...")
//   StreamDag: a response that is not a CAR (Content-Type) → kUnsupported (use Get instead)
//
// Identity CIDs are never fetched: Get returns the block built from the CID's own digest.
// Retries are NOT done here (the fetcher owns retry policy); block_timeout is applied by the
// caller through `deadline`.
//
// StreamDag semantics: blocks arrive in the gateway's order; each is verified, then on_block is
// called. If the body is truncated, a CAR section is corrupt, or a block fails verification,
// the blocks already delivered stay delivered and the error is returned afterwards. The CAR
// `roots` header is ignored. Callers check completeness themselves.
//
// Thread safety: all methods may be called concurrently.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "core/base/config.h"
#include "ipfs_fetch/block_source.h"
#include "ipfs_fetch/http_client.h"

namespace ipfly::fetch {

struct GatewayOptions {
  std::chrono::milliseconds connect_timeout{10'000};
  std::chrono::milliseconds stall_timeout{30'000};
  // From FetchConfig: stall_timeout_ms (connect timeout stays at its default).
  static GatewayOptions FromConfig(const FetchConfig& config);
};

class GatewaySource : public BlockSource {
 public:
  // `base_url` like "http://127.0.0.1:8080" (a trailing '/' is dropped). `http` must outlive
  // nothing in particular: it is shared. nullptr means HttpClient::Default().
  GatewaySource(std::string base_url, std::shared_ptr<HttpClient> http,
                GatewayOptions options = {});

  std::string name() const override { return "gateway " + base_url_; }
  const std::string& base_url() const { return base_url_; }

  Result<Block> Get(const mf::Cid& cid, Deadline deadline) override;
  Status StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                   const std::function<Status(const Block&)>& on_block) override;

  // Same, abortable from another thread (kCancelled once `cancel` fires). Used for hedging.
  Result<Block> Get(const mf::Cid& cid, Deadline deadline, std::shared_ptr<CancelToken> cancel);
  Status StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                   const std::function<Status(const Block&)>& on_block,
                   std::shared_ptr<CancelToken> cancel);

 private:
  Error StatusError(const HttpResponse& r, const std::string& what) const;

  std::string base_url_;
  std::shared_ptr<HttpClient> http_;
  GatewayOptions options_;
};

// Several gateways as one source.
//   Get: tries the gateways in order; the next one is tried when the previous fails with any
//     error. With hedge_ms > 0 the next gateway is also started when the running ones have not
//     answered within hedge_ms; the first verified block wins and the others are cancelled (and
//     joined) before Get returns. Without hedging all requests run on the calling thread.
//   StreamDag: failover in order, no hedging (two streams would deliver duplicates); it moves on
//     to the next gateway only if the failing one delivered no block at all.
//   When every gateway fails, the error is the "most actionable" one: kUnavailable (retry) over
//     kTimeout over kCorrupt over kTooLarge over kNotFound; kNotFound only if all said so. The
//     message lists every gateway's error (so retry hints survive).
class MultiGatewaySource : public BlockSource {
 public:
  MultiGatewaySource(std::vector<std::shared_ptr<GatewaySource>> gateways,
                     std::chrono::milliseconds hedge);
  // Builds GatewaySources for every kGateway entry of `sources`, with options from `config`.
  static std::unique_ptr<MultiGatewaySource> FromConfig(const std::vector<SourceSpec>& sources,
                                                        const FetchConfig& config,
                                                        std::shared_ptr<HttpClient> http);

  std::string name() const override;
  size_t size() const { return gateways_.size(); }

  Result<Block> Get(const mf::Cid& cid, Deadline deadline) override;
  Status StreamDag(const mf::Cid& root, EntityRange range, Deadline deadline,
                   const std::function<Status(const Block&)>& on_block) override;

 private:
  Result<Block> GetHedged(const mf::Cid& cid, Deadline deadline);

  std::vector<std::shared_ptr<GatewaySource>> gateways_;
  std::chrono::milliseconds hedge_;
};

// Combines per-source failures as described above (exposed for the fetcher and tests).
Error CombineSourceErrors(const std::vector<Error>& errors, std::string_view what);

}  // namespace ipfly::fetch
