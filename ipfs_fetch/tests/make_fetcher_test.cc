// End to end over real HTTP: Config → MakeFetcher → UnixfsReader against the test gateway.
#include "ipfs_fetch/make_fetcher.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <string>

#include "core/unixfs/importer.h"
#include "ipfs_fetch/fs_block_store.h"
#include "ipfs_fetch/unixfs_reader.h"
#include "tests/support/fault_http_server.h"
#include "tests/support/process.h"

namespace ipfly::fetch {
namespace {

using namespace std::chrono_literals;

// Puts imported blocks on the gateway.
class ServerSink : public BlockSink {
 public:
  explicit ServerSink(ipfly::test::BlockServer* s) : s_(s) {}
  Status Put(const Block& b) override {
    s_->Put(b.cid(), Bytes(b.data().begin(), b.data().end()));
    blocks.push_back(b.cid());
    return OkStatus();
  }
  std::vector<mf::Cid> blocks;

 private:
  ipfly::test::BlockServer* s_;
};

Config TestConfig(const std::string& dir, const std::string& gateway_url) {
  Config c = Config::Defaults();
  c.store_dir = dir + "/store";
  c.cache_dir = "";
  c.sources = {SourceSpec::Parse("gateway=" + gateway_url).value()};
  c.fetch.retry_backoff_ms = 5;
  c.fetch.block_timeout_ms = 5000;
  return c;
}

TEST(MakeFetcher, ReadsThroughGatewayCachesAndWorksOfflineAfterRestart) {
  ipfly::testing::TempDir tmp;
  ipfly::test::BlockServer gw;
  ASSERT_TRUE(gw.Start().ok());
  Bytes data(300'000);
  std::mt19937_64 rng(1);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  ServerSink sink(&gw);
  auto p = unixfs::ImportProfile::ByName("kubo-v1").value();
  p.chunk_size = 16384;
  p.max_links = 8;
  mf::Cid root = unixfs::ImportBytes(data, p, &sink).value().cid;

  Config cfg = TestConfig(tmp.path(), gw.base_url());
  {
    auto fetcher = MakeFetcher(cfg).value();
    ASSERT_NE(fetcher->store(), nullptr);
    ASSERT_NE(fetcher->cache(), nullptr);
    UnixfsReader reader(fetcher.get(), UnixfsReaderOptions::FromConfig(cfg.fetch));
    Bytes out(data.size());
    auto n = reader.ReadAt(root, 0, out, DeadlineIn(20s));
    ASSERT_TRUE(n.ok()) << n.error().ToString();
    ASSERT_EQ(*n, data.size());
    EXPECT_EQ(out, data);
    EXPECT_EQ(fetcher->stats().fetched, sink.blocks.size());
    EXPECT_TRUE(std::filesystem::exists(CacheDirOf(cfg) + "/blocks"));
  }
  gw.Stop();
  // Restarted, offline: everything comes from the disk cache.
  MakeFetcherOptions off;
  off.offline = true;
  auto fetcher = MakeFetcher(cfg, off).value();
  UnixfsReader reader(fetcher.get());
  Bytes out(1000);
  auto n = reader.ReadAt(root, 123'456, out, DeadlineIn(5s));
  ASSERT_TRUE(n.ok()) << n.error().ToString();
  EXPECT_EQ(out, Bytes(data.begin() + 123'456, data.begin() + 124'456));
  EXPECT_GT(fetcher->stats().cache_hits, 0u);
}

TEST(MakeFetcher, StreamUsesGatewayCarAndFillsCache) {
  ipfly::testing::TempDir tmp;
  ipfly::test::BlockServer gw;
  ASSERT_TRUE(gw.Start().ok());
  Bytes data(200'000);
  std::mt19937_64 rng(2);
  for (auto& b : data) b = static_cast<uint8_t>(rng());
  ServerSink sink(&gw);
  auto p = unixfs::ImportProfile::ByName("kubo-v1").value();
  p.chunk_size = 8192;
  p.max_links = 6;
  mf::Cid root = unixfs::ImportBytes(data, p, &sink).value().cid;
  // The importer emits children before parents; a gateway sends the root first. Any order
  // works for the reader (staging), this one is the reverse of creation.
  gw.SetCar(root, std::vector<mf::Cid>(sink.blocks.rbegin(), sink.blocks.rend()));

  Config cfg = TestConfig(tmp.path(), gw.base_url());
  auto fetcher = MakeFetcher(cfg).value();
  UnixfsReader reader(fetcher.get(), UnixfsReaderOptions::FromConfig(cfg.fetch));
  Bytes out;
  Status st = reader.Stream(
      root, 0, UINT64_MAX,
      [&](ByteView b) {
        out.insert(out.end(), b.begin(), b.end());
        return OkStatus();
      },
      DeadlineIn(20s));
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_EQ(out, data);
  EXPECT_EQ(reader.stats().blocks_streamed, sink.blocks.size());
  EXPECT_EQ(fetcher->stats().fetched, 0u);  // no per-block requests
  fetcher->FlushCache();                    // cache writes are asynchronous
  for (const auto& c : sink.blocks) EXPECT_TRUE(fetcher->cache()->Has(c).value());
}

TEST(MakeFetcher, RetriesServerErrorsThenSucceeds) {
  ipfly::testing::TempDir tmp;
  ipfly::test::BlockServer gw;
  ASSERT_TRUE(gw.Start().ok());
  Block b = Block::Make(mf::kCodecRaw, ToBytes("behind a flaky gateway")).value();
  gw.Put(b.cid(), Bytes(b.data().begin(), b.data().end()));
  gw.SetFault(b.cid(), ipfly::test::BlockFault::kServerError);
  Config cfg = TestConfig(tmp.path(), gw.base_url());
  cfg.fetch.retries = 2;
  auto fetcher = MakeFetcher(cfg).value();
  auto got = fetcher->Get(b.cid(), DeadlineIn(5s));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kUnavailable);
  EXPECT_EQ(gw.requests_for(b.cid()), 3u);
  EXPECT_NE(got.error().message().find("gateway " + gw.base_url()), std::string::npos)
      << got.error().message();
  gw.SetFault(b.cid(), ipfly::test::BlockFault::kNone);
  got = fetcher->Get(b.cid(), DeadlineIn(5s));
  ASSERT_TRUE(got.ok()) << got.error().ToString();
}

TEST(MakeFetcher, BorrowedStoreAndNoCache) {
  ipfly::testing::TempDir tmp;
  auto store = FsBlockStore::Open(tmp / "mine").value();
  Block b = Block::Make(mf::kCodecRaw, ToBytes("added locally")).value();
  ASSERT_TRUE(store->Put(b).ok());
  Config cfg = Config::Defaults();
  cfg.store_dir = tmp / "unused";
  MakeFetcherOptions o;
  o.store = store.get();
  o.no_cache = true;
  o.offline = true;
  auto fetcher = MakeFetcher(cfg, o).value();
  EXPECT_EQ(fetcher->store(), store.get());
  EXPECT_EQ(fetcher->cache(), nullptr);
  EXPECT_TRUE(fetcher->Get(b.cid(), DeadlineIn(1s)).ok());
  EXPECT_FALSE(std::filesystem::exists(tmp / "unused"));
}

}  // namespace
}  // namespace ipfly::fetch
