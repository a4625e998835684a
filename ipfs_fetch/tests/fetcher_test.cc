#include "ipfs_fetch/fetcher.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "core/block.h"
#include "ipfs_fetch/fs_block_store.h"
#include "tests/support/fake_block_source.h"
#include "tests/support/process.h"

namespace ipfly::fetch {
namespace {

using namespace std::chrono_literals;
using ipfly::testing::FakeBlockSource;
using ipfly::testing::Fault;
using ipfly::testing::Gate;

Block Raw(const std::string& s) { return Block::Make(mf::kCodecRaw, ToBytes(s)).value(); }

int64_t ElapsedMs(Clock::time_point start) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - start).count();
}

FetchConfig FastConfig() {
  FetchConfig c;
  c.retries = 3;
  c.retry_backoff_ms = 5;
  c.block_timeout_ms = 2000;
  return c;
}

// store + cache (memory) + two fake sources.
struct Rig {
  explicit Rig(FetchConfig config = FastConfig()) {
    FetcherOptions o;
    o.config = config;
    o.store = &store;
    o.cache = &cache;
    o.sources = {&a, &b};
    fetcher = std::make_unique<Fetcher>(std::move(o));
  }
  MemoryBlockStore store{"store"};
  MemoryBlockStore cache{"cache"};
  FakeBlockSource a{"gw-a"};
  FakeBlockSource b{"gw-b"};
  std::unique_ptr<Fetcher> fetcher;
};

TEST(Fetcher, IdentityCidAnsweredInline) {
  Rig r;
  mf::Cid id = mf::Cid::V1(mf::kCodecRaw, mf::Multihash::Identity(AsBytes("tiny")).value());
  auto got = r.fetcher->Get(id, DeadlineIn(1s));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(AsString(got->data()), "tiny");
  EXPECT_EQ(r.a.gets() + r.b.gets(), 0u);
  EXPECT_EQ(r.fetcher->stats().identity, 1u);
}

TEST(Fetcher, LayerOrderStoreCacheThenSources) {
  Rig r;
  Block in_store = Raw("in store"), in_cache = Raw("in cache"), in_b = Raw("only in b");
  ASSERT_TRUE(r.store.Put(in_store).ok());
  ASSERT_TRUE(r.cache.Put(in_cache).ok());
  r.a.Add(in_store);
  r.a.Add(in_cache);
  r.b.Add(in_b);

  EXPECT_TRUE(r.fetcher->Get(in_store.cid(), DeadlineIn(1s)).ok());
  EXPECT_TRUE(r.fetcher->Get(in_cache.cid(), DeadlineIn(1s)).ok());
  EXPECT_EQ(r.a.gets(), 0u);

  auto got = r.fetcher->Get(in_b.cid(), DeadlineIn(1s));
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(r.a.gets_of(in_b.cid()), 1u);  // a said not found, no retry
  EXPECT_EQ(r.b.gets_of(in_b.cid()), 1u);
  // Written to the cache, not to the store; the next Get is a cache hit.
  r.fetcher->FlushCache();  // cache writes are asynchronous
  EXPECT_TRUE(r.cache.Has(in_b.cid()).value());
  EXPECT_FALSE(r.store.Has(in_b.cid()).value());
  EXPECT_TRUE(r.fetcher->Get(in_b.cid(), DeadlineIn(1s)).ok());
  EXPECT_EQ(r.b.gets(), 1u);

  auto s = r.fetcher->stats();
  EXPECT_EQ(s.store_hits, 1u);
  EXPECT_EQ(s.cache_hits, 2u);
  EXPECT_EQ(s.fetched, 1u);
  EXPECT_EQ(s.fetched_bytes, in_b.size());
  ASSERT_EQ(s.sources.size(), 2u);
  EXPECT_EQ(s.sources[0].not_found, 1u);
  EXPECT_EQ(s.sources[1].blocks, 1u);
  std::string metrics = r.fetcher->MetricsText();
  EXPECT_NE(metrics.find("ipfly_fetch_hits_total{layer=\"cache\"} 2"), std::string::npos);
  EXPECT_NE(metrics.find("ipfly_fetch_source_blocks_total{source=\"gw-b\"} 1"), std::string::npos);
}

TEST(Fetcher, NotFoundEverywhereListsSources) {
  Rig r;
  Block x = Raw("nowhere");
  auto got = r.fetcher->Get(x.cid(), DeadlineIn(1s));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kNotFound);
  EXPECT_NE(got.error().message().find(x.cid().ToString()), std::string::npos);
  EXPECT_NE(got.error().message().find("gw-a"), std::string::npos);
  EXPECT_NE(got.error().message().find("gw-b"), std::string::npos);
  EXPECT_EQ(r.fetcher->stats().failed_not_found, 1u);
}

TEST(Fetcher, CorruptSourceSkippedAndNeverCached) {
  Rig r;
  Block x = Raw("good bytes");
  r.a.Add(x);
  r.a.SetFault(x.cid(), Fault::Corrupt());
  r.b.Add(x);
  auto got = r.fetcher->Get(x.cid(), DeadlineIn(1s));
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(AsString(got->data()), "good bytes");
  EXPECT_EQ(r.a.gets(), 1u);  // corrupt: not retried
  EXPECT_EQ(r.fetcher->stats().sources[0].corrupt, 1u);
  // The cache holds the good copy only.
  r.fetcher->FlushCache();
  auto cached = r.cache.Get(x.cid(), DeadlineIn(1s));
  ASSERT_TRUE(cached.ok());
  EXPECT_EQ(AsString(cached->data()), "good bytes");

  // Corrupt everywhere → kCorrupt, and nothing cached.
  Block y = Raw("other");
  r.a.Add(y);
  r.b.Add(y);
  r.a.SetFault(y.cid(), Fault::Corrupt());
  r.b.SetFault(y.cid(), Fault::Corrupt());
  auto bad = r.fetcher->Get(y.cid(), DeadlineIn(1s));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kCorrupt);
  EXPECT_FALSE(r.cache.Has(y.cid()).value());
}

TEST(Fetcher, RetriesWithBackoffThenSucceeds) {
  FetchConfig c = FastConfig();
  c.retries = 3;
  c.retry_backoff_ms = 20;
  Rig r(c);
  Block x = Raw("flaky");
  r.a.Add(x);
  r.a.SetFault(x.cid(), Fault::Unavailable(/*times=*/2));
  auto start = Clock::now();
  auto got = r.fetcher->Get(x.cid(), DeadlineIn(5s));
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(r.a.gets_of(x.cid()), 3u);
  EXPECT_EQ(r.b.gets(), 0u);
  // Backoff waits: [10,20] + [20,40] ms.
  EXPECT_GE(ElapsedMs(start), 30);
  EXPECT_EQ(r.fetcher->stats().sources[0].retries, 2u);
}

TEST(Fetcher, RetriesExhaustedMovesToNextSource) {
  Rig r;
  Block x = Raw("a is down");
  r.a.Add(x);
  r.a.SetFault(x.cid(), Fault::Unavailable());
  r.b.Add(x);
  auto got = r.fetcher->Get(x.cid(), DeadlineIn(5s));
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(r.a.gets(), 4u);  // 1 + 3 retries
  EXPECT_EQ(r.b.gets(), 1u);

  // Down everywhere → kUnavailable naming both sources and the attempts.
  Block y = Raw("all down");
  r.a.SetDefaultFault(Fault::Unavailable());
  r.b.SetDefaultFault(Fault::Unavailable());
  auto bad = r.fetcher->Get(y.cid(), DeadlineIn(5s));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kUnavailable);
  EXPECT_NE(bad.error().message().find("4 attempts"), std::string::npos) << bad.error().message();
}

TEST(Fetcher, RetryAfterHintIsHonoured) {
  FetchConfig c = FastConfig();
  c.retry_backoff_ms = 1;
  Rig r(c);
  Block x = Raw("rate limited");
  r.a.Add(x);
  Fault f = Fault::Unavailable(1);
  f.retry_after = 150ms;
  r.a.SetFault(x.cid(), f);
  auto start = Clock::now();
  ASSERT_TRUE(r.fetcher->Get(x.cid(), DeadlineIn(5s)).ok());
  EXPECT_GE(ElapsedMs(start), 150);
  EXPECT_EQ(r.a.gets(), 2u);
}

TEST(Fetcher, RetryAfterBeyondDeadlineTriesNextSourceInstead) {
  FetchConfig c = FastConfig();
  Rig r(c);
  Block x = Raw("come back later");
  r.a.Add(x);
  r.b.Add(x);
  Fault f = Fault::Unavailable();
  f.retry_after = 60s;
  r.a.SetFault(x.cid(), f);
  auto start = Clock::now();
  ASSERT_TRUE(r.fetcher->Get(x.cid(), DeadlineIn(2s)).ok());
  EXPECT_LT(ElapsedMs(start), 1000);
  EXPECT_EQ(r.a.gets(), 1u);
  EXPECT_EQ(r.b.gets(), 1u);
}

TEST(Fetcher, DeadlineRespectedWithPreciseMessage) {
  FetchConfig c = FastConfig();
  c.block_timeout_ms = 10'000;
  Rig r(c);
  Block x = Raw("slow");
  r.a.SetFault(x.cid(), Fault::Timeout());  // hangs until the request deadline
  auto start = Clock::now();
  auto got = r.fetcher->Get(x.cid(), DeadlineIn(300ms));
  int64_t ms = ElapsedMs(start);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kTimeout);
  EXPECT_GE(ms, 290);
  EXPECT_LT(ms, 600);
  const std::string& m = got.error().message();
  EXPECT_NE(m.find(x.cid().ToString()), std::string::npos) << m;
  EXPECT_NE(m.find("gw-a: timeout"), std::string::npos) << m;
  EXPECT_NE(m.find("gw-b: not tried"), std::string::npos) << m;
  EXPECT_EQ(r.fetcher->stats().failed_timeout, 1u);
}

TEST(Fetcher, BlockTimeoutLimitsOneRequestThenNextSource) {
  FetchConfig c = FastConfig();
  c.block_timeout_ms = 100;
  c.retries = 1;
  Rig r(c);
  Block x = Raw("b has it");
  r.a.SetFault(x.cid(), Fault::Timeout());
  r.b.Add(x);
  auto start = Clock::now();
  auto got = r.fetcher->Get(x.cid(), DeadlineIn(5s));
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(r.a.gets(), 2u);  // one retry after the per-request timeout
  EXPECT_LT(ElapsedMs(start), 1000);
}

TEST(Fetcher, ConcurrentGetsCollapseIntoOneFetch) {
  Rig r;
  Block x = Raw("popular");
  r.a.Add(x);
  auto gate = std::make_shared<Gate>();
  r.a.SetFault(x.cid(), Fault::Gated(gate));
  constexpr int kThreads = 8;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      auto got = r.fetcher->Get(x.cid(), DeadlineIn(10s));
      if (got.ok() && AsString(got->data()) == "popular") ++ok;
    });
  }
  ASSERT_TRUE(gate->AwaitWaiters(1));
  // Wait until the other callers are parked on the in-flight fetch.
  for (int i = 0; i < 500 && r.fetcher->stats().collapsed < kThreads - 1; ++i) {
    std::this_thread::sleep_for(2ms);
  }
  EXPECT_EQ(r.fetcher->stats().collapsed, static_cast<uint64_t>(kThreads - 1));
  gate->Open();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads);
  EXPECT_EQ(r.a.gets_of(x.cid()), 1u);
}

TEST(Fetcher, WaiterWithEarlierDeadlineGivesUpAlone) {
  Rig r;
  Block x = Raw("slowly popular");
  r.a.Add(x);
  auto gate = std::make_shared<Gate>();
  r.a.SetFault(x.cid(), Fault::Gated(gate));
  Result<Block> leader_result = Internal("unset");
  std::thread leader([&] { leader_result = r.fetcher->Get(x.cid(), DeadlineIn(10s)); });
  ASSERT_TRUE(gate->AwaitWaiters(1));
  auto start = Clock::now();
  auto impatient = r.fetcher->Get(x.cid(), DeadlineIn(100ms));
  EXPECT_LT(ElapsedMs(start), 500);
  ASSERT_FALSE(impatient.ok());
  EXPECT_EQ(impatient.error().code(), Errc::kTimeout);
  EXPECT_NE(impatient.error().message().find(x.cid().ToString()), std::string::npos);
  gate->Open();
  leader.join();
  ASSERT_TRUE(leader_result.ok()) << leader_result.error().ToString();
  EXPECT_EQ(r.a.gets_of(x.cid()), 1u);
}

TEST(Fetcher, WaiterOutlivesTimedOutLeaderAndFetchesItself) {
  Rig r;
  Block x = Raw("second chance");
  r.a.Add(x);
  auto gate = std::make_shared<Gate>();
  r.a.SetFault(x.cid(), Fault::Gated(gate));
  Result<Block> leader_result = Internal("unset");
  std::thread leader([&] { leader_result = r.fetcher->Get(x.cid(), DeadlineIn(200ms)); });
  ASSERT_TRUE(gate->AwaitWaiters(1));
  Result<Block> patient = Internal("unset");
  std::thread waiter([&] { patient = r.fetcher->Get(x.cid(), DeadlineIn(10s)); });
  // Once the leader timed out, the waiter asks again; let that request through.
  ASSERT_TRUE(gate->AwaitWaiters(1));
  leader.join();
  EXPECT_FALSE(leader_result.ok());
  ASSERT_TRUE(gate->AwaitWaiters(1));
  gate->Open();
  waiter.join();
  ASSERT_TRUE(patient.ok()) << patient.error().ToString();
}

TEST(Fetcher, WorksWithDiskCacheAndRefetchesCorruptCopy) {
  ipfly::testing::TempDir tmp;
  auto cache = FsBlockStore::Open(tmp.path(), {.max_bytes = 1 << 20}).value();
  FakeBlockSource src("gw");
  Block x = Raw("cached on disk");
  src.Add(x);
  FetcherOptions o;
  o.config = FastConfig();
  o.cache = cache.get();
  o.sources = {&src};
  Fetcher f(std::move(o));
  ASSERT_TRUE(f.Get(x.cid(), DeadlineIn(1s)).ok());
  f.FlushCache();
  EXPECT_TRUE(cache->Has(x.cid()).value());
  // Damage the cached copy: the fetcher treats it as a miss and fetches again.
  {
    FILE* fp = fopen(cache->BlockPath(x.cid().multihash()).c_str(), "r+b");
    ASSERT_NE(fp, nullptr);
    fputc('!', fp);
    fclose(fp);
  }
  auto got = f.Get(x.cid(), DeadlineIn(1s));
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  f.FlushCache();
  EXPECT_EQ(AsString(got->data()), "cached on disk");
  EXPECT_EQ(src.gets(), 2u);
  EXPECT_EQ(f.stats().local_corrupt, 1u);
  EXPECT_TRUE(cache->Get(x.cid(), DeadlineIn(1s)).ok());
}

TEST(Fetcher, OwnsWhatItIsGiven) {
  auto src = std::make_unique<FakeBlockSource>("owned");
  Block x = Raw("owned source");
  src->Add(x);
  FetcherOptions o;
  o.sources = {src.get()};
  o.owned.push_back(std::move(src));
  Fetcher f(std::move(o));
  EXPECT_TRUE(f.Get(x.cid(), DeadlineIn(1s)).ok());
}

TEST(Fetcher, NoSourcesConfigured) {
  FetcherOptions o;
  Fetcher f(std::move(o));
  auto got = f.Get(Raw("x").cid(), DeadlineIn(1s));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kNotFound);
}

TEST(Fetcher, StreamDagCachesAndForwards) {
  Rig r;
  Block x = Raw("streamed root");
  r.a.Add(x);
  r.b.Add(x);
  r.b.EnableStreaming();  // a cannot stream: skipped
  std::vector<mf::Cid> seen;
  Status st = r.fetcher->StreamDag(x.cid(), {}, DeadlineIn(1s), [&](const Block& b) {
    seen.push_back(b.cid());
    return OkStatus();
  });
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  ASSERT_EQ(seen.size(), 1u);
  r.fetcher->FlushCache();
  EXPECT_TRUE(r.cache.Has(x.cid()).value());
  EXPECT_EQ(r.fetcher->stats().sources[1].stream_blocks, 1u);
  // Now local: streaming is declined so that the reader uses the cache.
  st = r.fetcher->StreamDag(x.cid(), {}, DeadlineIn(1s), [](const Block&) { return OkStatus(); });
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kUnsupported);
}

}  // namespace
}  // namespace ipfly::fetch
