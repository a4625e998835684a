// MakeFetcher: builds the whole retrieval stack from a Config (embedded store, disk cache,
// remote sources in configured order) — the one call the CLI, the snapshotter and the registry
// shim make.
//
//   store  FsBlockStore at config.store_dir, no cap (blocks the user added)
//   cache  FsBlockStore at config.cache_dir (default <store_dir>/cache), cap cache_max_bytes
//   remote config.sources in order: "gateway=URL" → GatewaySource, "kubo=URL" → KuboRpcSource.
//          With fetch.hedge_ms > 0, each run of consecutive gateways becomes one
//          MultiGatewaySource (hedged requests); otherwise every gateway is its own source, so
//          the Fetcher retries and counts each one separately.
//          With [powergate] address set, a powergate::PowergateSource comes last (the cold
//          fallback; token from the config or the variable named by token_env; thaw jobs in
//          PowergateStateDirOf(config); whole objects land in the cache).
#pragma once

#include <memory>

#include "core/base/config.h"
#include "core/base/result.h"
#include "ipfs_fetch/fetcher.h"
#include "ipfs_fetch/http_client.h"

namespace ipfly::fetch {

struct MakeFetcherOptions {
  // Use these stores instead of opening the configured directories (borrowed: they must outlive
  // the Fetcher). The CLI passes its own store for `add`, so that imports and reads share it.
  BlockStore* store = nullptr;
  BlockStore* cache = nullptr;
  bool no_store = false;  // no embedded store at all
  bool no_cache = false;  // do not cache fetched blocks
  bool offline = false;   // ignore config.sources (local blocks only)
  // HTTP client shared by all sources; null = HttpClient::Default().
  std::shared_ptr<HttpClient> http;
};

// Errors: kIo / kInvalidArgument when a store directory cannot be opened (message names it).
Result<std::unique_ptr<Fetcher>> MakeFetcher(const Config& config,
                                             const MakeFetcherOptions& options = {});

// [powergate] state_dir, or <store_dir>/powergate when empty.
std::string PowergateStateDirOf(const Config& config);

// The cache directory a config implies (cache_dir, or <store_dir>/cache when empty).
std::string CacheDirOf(const Config& config);

}  // namespace ipfly::fetch
