#include "ipfs_fetch/make_fetcher.h"

#include <chrono>
#include <utility>
#include <vector>

#include "ipfs_fetch/fs_block_store.h"
#include "ipfs_fetch/gateway_source.h"
#include "ipfs_fetch/kubo_rpc.h"
#include "ipfs_fetch/powergate/cold_source.h"

namespace ipfly::fetch {

std::string CacheDirOf(const Config& config) {
  if (!config.cache_dir.empty()) return config.cache_dir;
  return config.store_dir + "/cache";
}

std::string PowergateStateDirOf(const Config& config) {
  if (!config.powergate.state_dir.empty()) return config.powergate.state_dir;
  return config.store_dir + "/powergate";
}

Result<std::unique_ptr<Fetcher>> MakeFetcher(const Config& config,
                                             const MakeFetcherOptions& options) {
  FetcherOptions fo;
  fo.config = config.fetch;

  if (options.store) {
    fo.store = options.store;
  } else if (!options.no_store) {
    if (config.store_dir.empty()) return InvalidArgument("no store directory configured");
    FsBlockStoreOptions so;
    so.name = "store " + config.store_dir;
    auto store = FsBlockStore::Open(config.store_dir, so);
    if (!store.ok()) return std::move(store).error().With("opening the block store");
    fo.store = store->get();
    fo.owned.push_back(std::move(*store));
  }

  if (options.cache) {
    fo.cache = options.cache;
  } else if (!options.no_cache) {
    const std::string dir = CacheDirOf(config);
    if (dir.empty() || dir == "/cache") return InvalidArgument("no cache directory configured");
    FsBlockStoreOptions co;
    co.name = "cache " + dir;
    co.max_bytes = config.cache_max_bytes;
    auto cache = FsBlockStore::Open(dir, co);
    if (!cache.ok()) return std::move(cache).error().With("opening the block cache");
    fo.cache = cache->get();
    fo.owned.push_back(std::move(*cache));
  }

  if (!options.offline) {
    std::shared_ptr<HttpClient> http = options.http ? options.http : HttpClient::Default();
    const GatewayOptions gw_opts = GatewayOptions::FromConfig(config.fetch);
    const auto hedge = std::chrono::milliseconds(config.fetch.hedge_ms);
    std::vector<std::shared_ptr<GatewaySource>> run;  // consecutive gateways (hedging only)
    auto flush_run = [&] {
      if (run.empty()) return;
      auto multi = std::make_unique<MultiGatewaySource>(std::move(run), hedge);
      run.clear();
      fo.sources.push_back(multi.get());
      fo.owned.push_back(std::move(multi));
    };
    for (const SourceSpec& spec : config.sources) {
      switch (spec.kind) {
        case SourceSpec::Kind::kGateway: {
          if (hedge.count() > 0) {
            run.push_back(std::make_shared<GatewaySource>(spec.url, http, gw_opts));
            break;
          }
          auto lone = std::make_unique<GatewaySource>(spec.url, http, gw_opts);
          fo.sources.push_back(lone.get());
          fo.owned.push_back(std::move(lone));
          break;
        }
        case SourceSpec::Kind::kKubo: {
          flush_run();
          KuboRpcOptions ko;
          ko.stall_timeout = std::chrono::milliseconds(config.fetch.stall_timeout_ms);
          auto client = std::make_shared<KuboRpcClient>(spec.url, http, ko);
          auto src = std::make_unique<KuboRpcSource>(std::move(client));
          fo.sources.push_back(src.get());
          fo.owned.push_back(std::move(src));
          break;
        }
      }
    }
    flush_run();
    if (!config.powergate.address.empty()) {
      // The cold fallback, always last: it thaws and streams whole objects.
      auto client = IPFLY_TRY(powergate::Client::FromConfig(config.powergate));
      powergate::ColdSourceOptions po;
      po.config = config.powergate;
      if (po.config.state_dir.empty()) po.config.state_dir = PowergateStateDirOf(config);
      po.profile = IPFLY_TRY(unixfs::ImportProfile::ByName(config.profile));
      po.landing = fo.cache;
      po.http = http;
      auto pg = IPFLY_TRY(powergate::PowergateSource::Open(std::move(client), std::move(po)));
      fo.sources.push_back(pg.get());
      fo.owned.push_back(std::move(pg));
    }
  }
  return std::make_unique<Fetcher>(std::move(fo));
}

}  // namespace ipfly::fetch
