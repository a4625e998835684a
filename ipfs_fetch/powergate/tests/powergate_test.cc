// Powergate cold fallback against real parts: the gRPC client and the cold source talk to the
// fake Powergate (tests/support/fake_powergate.h: real gRPC + HTTP on loopback, the same wire
// contract as powd); reads go through the real Fetcher, FsBlockStore cache, UnixfsReader and, in
// the FUSE tests, a real FUSE mount of a gzip layer (LayerIndex + LayerReader + LayerTree).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/base/log.h"
#include "core/unixfs/importer.h"
#include "fusefs/layer_tree.h"
#include "fusefs/tests/test_mount.h"
#include "ipfs_fetch/fs_block_store.h"
#include "ipfs_fetch/make_fetcher.h"
#include "ipfs_fetch/powergate/client.h"
#include "ipfs_fetch/powergate/cold_source.h"
#include "ipfs_fetch/unixfs_reader.h"
#include "layer/layer_index.h"
#include "layer/layer_reader.h"
#include "tests/support/fake_powergate.h"
#include "tests/support/process.h"

namespace ipfly::fetch::powergate {
namespace {

namespace fs = std::filesystem;
using std::chrono::milliseconds;
using testing::FakePowergate;
using testing::TempDir;

Bytes RandomBytes(size_t n, uint64_t seed) {
  Bytes b(n);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& c : b) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<uint8_t>(x);
  }
  return b;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

size_t CountFiles(const std::string& dir) {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    if (it->is_regular_file()) ++n;
  }
  return n;
}

class PowergateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitLogging("warn");
    testing::FakePowergateOptions o;
    o.thaw_time = milliseconds(300);
    auto pg = FakePowergate::Start(o);
    ASSERT_TRUE(pg.ok()) << pg.error().ToString();
    pg_ = std::move(*pg);
  }

  std::shared_ptr<Client> MakeClient(std::string token = "test-token") {
    ClientOptions co;
    co.address = pg_->address();
    co.token = std::move(token);
    co.call_timeout = milliseconds(5000);
    return std::make_shared<Client>(co);
  }

  PowergateConfig PgConfig(bool proxy, uint64_t price = 1000) {
    PowergateConfig c;
    c.address = pg_->address();
    c.token = "test-token";
    c.ipfs_proxy = proxy ? pg_->proxy_url() : "";
    c.unfreeze_max_price = price;
    c.job_poll_ms = 50;
    c.state_dir = tmp_ / "pgstate";
    return c;
  }

  // A Fetcher with a disk cache and no IPFS sources at all: only Powergate has the data.
  std::unique_ptr<Fetcher> MakeChain(const PowergateConfig& pc, PowergateSource** out = nullptr) {
    FsBlockStoreOptions co;
    co.name = "cache";
    auto cache = FsBlockStore::Open(tmp_ / "cache", co);
    EXPECT_TRUE(cache.ok());
    ColdSourceOptions so;
    so.config = pc;
    so.profile = *unixfs::ImportProfile::ByName("kubo-v1");
    so.landing = cache->get();
    auto src = PowergateSource::Open(MakeClient(), so);
    EXPECT_TRUE(src.ok()) << src.error().ToString();
    FetcherOptions fo;
    fo.config.retries = 2;
    fo.config.retry_backoff_ms = 20;
    fo.cache = cache->get();
    fo.sources.push_back(src->get());
    if (out) *out = src->get();
    cache_ = cache->get();
    fo.owned.push_back(std::move(*cache));
    fo.owned.push_back(std::move(*src));
    return std::make_unique<Fetcher>(std::move(fo));
  }

  Result<Bytes> ReadAll(Fetcher* f, const mf::Cid& root,
                        milliseconds timeout = milliseconds(5000)) {
    UnixfsReader reader(f);
    auto size = reader.Size(root, DeadlineIn(timeout));
    if (!size.ok()) return size.error();
    Bytes out(*size);
    auto n = reader.ReadAt(root, 0, out, DeadlineIn(timeout));
    if (!n.ok()) return n.error();
    out.resize(*n);
    return out;
  }

  TempDir tmp_;
  std::unique_ptr<FakePowergate> pg_;
  BlockStore* cache_ = nullptr;
};

// --- client against the fake ---------------------------------------------------------------

TEST_F(PowergateTest, ClientTokenErrors) {
  auto data = RandomBytes(1000, 1);
  auto cid = pg_->AddObject(data, true, false);
  ASSERT_TRUE(cid.ok());
  auto none = MakeClient("")->CidInfo(cid->ToString(), DeadlineIn(milliseconds(3000)));
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), Errc::kPermissionDenied);
  EXPECT_NE(none.error().message().find("auth token can't be empty"), std::string::npos);
  auto bad = MakeClient("wrong-token")->CidInfo(cid->ToString(), DeadlineIn(milliseconds(3000)));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kPermissionDenied);
  EXPECT_EQ(bad.error().message().find("wrong-token"), std::string::npos) << "token leaked";
  EXPECT_EQ(pg_->counters().denied, 2u);
}

// [powergate] tls = true: the client verifies powd's certificate against tls_ca (or the
// system roots) and speaks TLS; a plaintext client cannot talk to a TLS server.
TEST_F(PowergateTest, ClientOverTls) {
  auto r = testing::Sh("cd " + std::string(tmp_.path()) +
                       " && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1"
                       " -nodes -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1"
                       " -days 1 -keyout key.pem -out cert.pem 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  testing::FakePowergateOptions o;
  o.tls_cert_pem = testing::ReadFile(tmp_ / "cert.pem");
  o.tls_key_pem = testing::ReadFile(tmp_ / "key.pem");
  auto tls_pg = FakePowergate::Start(o);
  ASSERT_TRUE(tls_pg.ok()) << tls_pg.error().ToString();
  auto data = RandomBytes(5000, 9);
  auto cid = (*tls_pg)->AddObject(data, true, false);
  ASSERT_TRUE(cid.ok());
  PowergateConfig c;
  // An IP address in the certificate: a host name would go through gRPC's c-ares resolver,
  // whose allocations LeakSanitizer reports.
  c.address = (*tls_pg)->address();
  c.token = "test-token";
  c.tls = true;
  c.tls_ca = tmp_ / "cert.pem";
  auto client = Client::FromConfig(c);
  ASSERT_TRUE(client.ok()) << client.error().ToString();
  auto info = (*client)->CidInfo(cid->ToString(), DeadlineIn(milliseconds(10000)));
  ASSERT_TRUE(info.ok()) << info.error().ToString();
  EXPECT_EQ(info->cid(), cid->ToString());
  // Without our CA (system roots) the self-signed certificate is refused.
  c.tls_ca.clear();
  auto untrusted = Client::FromConfig(c);
  ASSERT_TRUE(untrusted.ok());
  EXPECT_FALSE((*untrusted)->CidInfo(cid->ToString(), DeadlineIn(milliseconds(3000))).ok());
  // Plaintext against the TLS port fails too, and a missing CA file is a clear config error.
  c.tls = false;
  auto plain = Client::FromConfig(c);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE((*plain)->CidInfo(cid->ToString(), DeadlineIn(milliseconds(3000))).ok());
  c.tls = true;
  c.tls_ca = tmp_ / "missing.pem";
  auto bad = Client::FromConfig(c);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("tls_ca"), std::string::npos);
}

TEST_F(PowergateTest, ClientStatesAndStreaming) {
  auto data = RandomBytes(300'000, 2);
  auto hot = pg_->AddObject(data, true, false);
  auto cold = pg_->AddObject(RandomBytes(5000, 3), false, true);
  ASSERT_TRUE(hot.ok() && cold.ok());
  auto c = MakeClient();
  auto hi = c->CidInfo(hot->ToString(), DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(hi.ok()) << hi.error().ToString();
  EXPECT_TRUE(hi->current_storage_info().hot().enabled());
  EXPECT_FALSE(hi->current_storage_info().cold().enabled());
  auto ci = c->CidInfo(cold->ToString(), DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(ci.ok());
  EXPECT_FALSE(ci->current_storage_info().hot().enabled());
  EXPECT_TRUE(ci->current_storage_info().cold().enabled());
  EXPECT_EQ(ci->current_storage_info().cold().filecoin().proposals_size(), 1);
  auto unknown = c->CidInfo(
      mf::Cid::Parse("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")->ToString(),
      DeadlineIn(milliseconds(3000)));
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), Errc::kNotFound);

  std::vector<size_t> chunks;
  Bytes got;
  ASSERT_TRUE(c->Get(hot->ToString(), DeadlineIn(milliseconds(3000)), [&](ByteView b) {
                 chunks.push_back(b.size());
                 got.insert(got.end(), b.begin(), b.end());
                 return OkStatus();
               }).ok());
  EXPECT_EQ(got, data);
  ASSERT_EQ(chunks.size(), (data.size() + 32767) / 32768);
  for (size_t i = 0; i + 1 < chunks.size(); ++i) EXPECT_EQ(chunks[i], 32768u);

  auto st =
      c->Get(cold->ToString(), DeadlineIn(milliseconds(3000)), [](ByteView) { return OkStatus(); });
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kFailedPrecondition);
  EXPECT_NE(st.error().message().find("cid disabled in hot storage"), std::string::npos);

  // A deadline that has passed: a clear timeout, no hang.
  auto late = c->CidInfo(hot->ToString(), Clock::now() - milliseconds(1));
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.error().code(), Errc::kTimeout);

  auto def = c->DefaultStorageConfig(DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(def.ok());
  EXPECT_FALSE(def->hot().enabled());
  EXPECT_TRUE(def->cold().enabled());
}

TEST_F(PowergateTest, ClientThawJobWatch) {
  auto cold = pg_->AddObject(RandomBytes(70'000, 4), false, true);
  ASSERT_TRUE(cold.ok());
  auto c = MakeClient();
  pb::StorageConfig cfg;
  cfg.mutable_hot()->set_enabled(true);
  cfg.mutable_hot()->set_allow_unfreeze(true);
  cfg.mutable_hot()->set_unfreeze_max_price(100);
  cfg.mutable_cold()->set_enabled(true);
  auto id = c->ApplyStorageConfig(cold->ToString(), cfg, true, DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(id.ok()) << id.error().ToString();
  std::vector<pb::JobStatus> seen;
  auto st =
      c->WatchStorageJobs({*id}, DeadlineIn(milliseconds(5000)), [&](const pb::StorageJob& j) {
        EXPECT_EQ(j.id(), *id);
        seen.push_back(j.status());
        return true;
      });
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), pb::JOB_STATUS_SUCCESS);
  EXPECT_EQ(seen.front(), pb::JOB_STATUS_QUEUED);
  auto job = c->StorageJob(*id, DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->status(), pb::JOB_STATUS_SUCCESS);
  EXPECT_TRUE(pg_->IsHot(*cold));
  // Without allow_unfreeze the thaw fails, with a cause.
  ASSERT_TRUE(pg_->SetState(*cold, false, true).ok());
  cfg.mutable_hot()->set_allow_unfreeze(false);
  auto id2 = c->ApplyStorageConfig(cold->ToString(), cfg, true, DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(id2.ok());
  ASSERT_TRUE(
      testing::WaitFor([&] { return pg_->JobState(*id2) == "FAILED"; }, milliseconds(3000)));
  auto j2 = c->StorageJob(*id2, DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(j2.ok());
  EXPECT_NE(j2->error_cause().find("unfreeze"), std::string::npos);
}

// --- the cold source -----------------------------------------------------------------------

TEST_F(PowergateTest, HotObjectThroughGetIsReimportedAndCached) {
  auto data = RandomBytes(3 * 262144 + 1234, 5);
  auto cid = pg_->AddObject(data, true, false);
  ASSERT_TRUE(cid.ok());
  PowergateSource* src = nullptr;
  auto f = MakeChain(PgConfig(/*proxy=*/false), &src);
  auto got = ReadAll(f.get(), *cid);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_EQ(src->stats().objects_loaded, 1u);
  EXPECT_EQ(pg_->counters().get, 1u) << "one whole-object Get for all blocks";
  f->FlushCache();
  // Root + 4 leaves are in the cache now; a new chain reads them without Powergate.
  auto has = cache_->Has(*cid);
  ASSERT_TRUE(has.ok());
  EXPECT_TRUE(*has);
  EXPECT_NE(f->MetricsText().find("ipfly_powergate_objects_loaded_total 1"), std::string::npos);
}

TEST_F(PowergateTest, HotObjectThroughIpfsProxyBlockByBlock) {
  auto data = RandomBytes(5 * 262144, 6);
  auto cid = pg_->AddObject(data, true, false);
  ASSERT_TRUE(cid.ok());
  PowergateSource* src = nullptr;
  auto f = MakeChain(PgConfig(/*proxy=*/true), &src);
  auto got = ReadAll(f.get(), *cid);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_EQ(pg_->counters().get, 0u);
  EXPECT_EQ(src->stats().proxy_blocks, 6u);  // root + 5 leaves
  EXPECT_EQ(pg_->counters().cid_info, 1u) << "CidInfo once per object, not per block";
}

TEST_F(PowergateTest, StreamThroughTheProxyIsOneVerifiedStream) {
  auto data = RandomBytes(6 * 262144 + 99, 14);
  auto cid = pg_->AddObject(data, true, false);
  ASSERT_TRUE(cid.ok());
  PowergateSource* src = nullptr;
  auto f = MakeChain(PgConfig(true), &src);
  UnixfsReader reader(f.get());
  Bytes got;
  Status st = reader.Stream(
      *cid, 1000, data.size() - 2000,
      [&](ByteView b) {
        got.insert(got.end(), b.begin(), b.end());
        return OkStatus();
      },
      DeadlineIn(milliseconds(5000)));
  ASSERT_TRUE(st.ok()) << st.error().ToString();
  EXPECT_EQ(got, Bytes(data.begin() + 1000, data.end() - 1000));
  EXPECT_EQ(reader.stats().blocks_streamed, 7u);  // the 7 leaves, from one stream
  EXPECT_GT(pg_->counters().proxy_requests, 0u);
  EXPECT_EQ(pg_->counters().get, 0u);
  // Corrupt bytes from the proxy stream: rejected block by block, never delivered.
  pg_->SetDataMode(FakePowergate::DataMode::kCorrupt);
  auto data2 = RandomBytes(3 * 262144, 15);
  auto cid2 = pg_->AddObject(data2, true, false);
  ASSERT_TRUE(cid2.ok());
  Bytes got2;
  st = reader.Stream(
      *cid2, 0, UINT64_MAX,
      [&](ByteView b) {
        got2.insert(got2.end(), b.begin(), b.end());
        return OkStatus();
      },
      DeadlineIn(milliseconds(5000)));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kCorrupt) << st.error().ToString();
  EXPECT_TRUE(got2.empty() || std::equal(got2.begin(), got2.end(), data2.begin()))
      << "wrong bytes delivered";
}

TEST_F(PowergateTest, ProxyNeedsTheTokenHeader) {
  auto cid = pg_->AddObject(RandomBytes(1000, 13), true, false);
  ASSERT_TRUE(cid.ok());
  KuboRpcClient anonymous(pg_->proxy_url(), nullptr);
  auto b = anonymous.BlockGet(*cid, DeadlineIn(milliseconds(3000)));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kPermissionDenied) << b.error().ToString();
  KuboRpcOptions ko;
  ko.headers.emplace_back(std::string(kProxyAuthHeader), "test-token");
  KuboRpcClient authed(pg_->proxy_url(), nullptr, ko);
  auto ok = authed.BlockGet(*cid, DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(ok.ok()) << ok.error().ToString();
  // Cold objects are not served by the proxy.
  ASSERT_TRUE(pg_->SetState(*cid, false, true).ok());
  auto cold = authed.BlockGet(*cid, DeadlineIn(milliseconds(3000)));
  ASSERT_FALSE(cold.ok());
  EXPECT_EQ(cold.error().code(), Errc::kNotFound);
}

TEST_F(PowergateTest, ProxyDownFallsBackToGet) {
  auto data = RandomBytes(2 * 262144, 7);
  auto cid = pg_->AddObject(data, true, false);
  ASSERT_TRUE(cid.ok());
  PowergateSource* src = nullptr;
  auto pc = PgConfig(true);
  pc.ipfs_proxy = "http://127.0.0.1:" + std::to_string(testing::FreePort());
  auto f = MakeChain(pc, &src);
  auto got = ReadAll(f.get(), *cid);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_EQ(src->stats().objects_loaded, 1u);
  EXPECT_EQ(src->stats().proxy_blocks, 0u);
}

TEST_F(PowergateTest, CorruptOrTruncatedDataIsRejectedAndNeverCached) {
  auto data = RandomBytes(4 * 262144 + 77, 8);
  auto cid = pg_->AddObject(data, true, false);
  ASSERT_TRUE(cid.ok());
  for (auto mode : {FakePowergate::DataMode::kCorrupt, FakePowergate::DataMode::kTruncated}) {
    pg_->SetDataMode(mode);
    PowergateSource* src = nullptr;
    auto f = MakeChain(PgConfig(false), &src);
    auto got = ReadAll(f.get(), *cid, milliseconds(3000));
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.error().code(), Errc::kCorrupt) << got.error().ToString();
    EXPECT_NE(got.error().message().find("rejected, nothing cached"), std::string::npos)
        << got.error().ToString();
    EXPECT_GE(src->stats().rejected, 1u);
    f->FlushCache();
    EXPECT_EQ(CountFiles(tmp_ / "cache/blocks"), 0u) << "nothing from a rejected object cached";
  }
  // The proxy path verifies every block: corrupt blocks never pass either.
  pg_->SetDataMode(FakePowergate::DataMode::kCorrupt);
  {
    auto f = MakeChain(PgConfig(true));
    auto got = ReadAll(f.get(), *cid, milliseconds(3000));
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.error().code(), Errc::kCorrupt) << got.error().ToString();
    f->FlushCache();
    EXPECT_EQ(CountFiles(tmp_ / "cache/blocks"), 0u);
  }
  pg_->SetDataMode(FakePowergate::DataMode::kGood);
  auto f = MakeChain(PgConfig(false));
  auto got = ReadAll(f.get(), *cid);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, data);
}

TEST_F(PowergateTest, ReadDuringThawFailsFastWithJobIdThenSucceeds) {
  auto data = RandomBytes(2 * 262144 + 5, 9);
  auto cid = pg_->AddObject(data, false, true);
  ASSERT_TRUE(cid.ok());
  pg_->SetThawMode(FakePowergate::ThawMode::kHold);
  PowergateSource* src = nullptr;
  auto f = MakeChain(PgConfig(false), &src);
  // Concurrent readers: exactly one thaw job.
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int i = 0; i < 6; ++i) {
    ts.emplace_back([&] {
      if (!ReadAll(f.get(), *cid, milliseconds(2000)).ok()) ++failures;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 6);
  EXPECT_EQ(pg_->counters().thaws, 1u);
  ASSERT_EQ(pg_->JobIds().size(), 1u);
  const std::string job = pg_->JobIds()[0];
  auto t0 = Clock::now();
  auto got = ReadAll(f.get(), *cid, milliseconds(10'000));
  auto took = Clock::now() - t0;
  ASSERT_FALSE(got.ok());
  EXPECT_LT(took, milliseconds(3000)) << "a read during a thaw must fail fast";
  EXPECT_NE(got.error().message().find("being retrieved from Filecoin, job " + job + " ("),
            std::string::npos)
      << got.error().ToString();
  EXPECT_NE(f->MetricsText().find("ipfly_powergate_cold_retrievals_in_flight 1"),
            std::string::npos);
  ASSERT_TRUE(pg_->CompleteJob(job).ok());
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto jobs = src->Jobs();
        return jobs.size() == 1 && jobs[0].status == pb::JOB_STATUS_SUCCESS;
      },
      milliseconds(5000)));
  got = ReadAll(f.get(), *cid);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_EQ(pg_->counters().thaws, 1u);
  EXPECT_NE(f->MetricsText().find("state=\"SUCCESS\""), std::string::npos);
}

TEST_F(PowergateTest, ThawsDisabledOrFailedGiveClearErrors) {
  auto cid = pg_->AddObject(RandomBytes(1000, 10), false, true);
  ASSERT_TRUE(cid.ok());
  {
    auto f = MakeChain(PgConfig(false, /*price=*/0));
    auto got = ReadAll(f.get(), *cid, milliseconds(2000));
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.error().code(), Errc::kFailedPrecondition) << got.error().ToString();
    EXPECT_NE(got.error().message().find("thaws are disabled"), std::string::npos);
    EXPECT_EQ(pg_->counters().thaws, 0u);
  }
  pg_->SetThawMode(FakePowergate::ThawMode::kFail, "no miner answered the retrieval");
  PowergateSource* src = nullptr;
  auto pc = PgConfig(false);
  pc.state_dir = tmp_ / "pgstate-fail";
  auto f = MakeChain(pc, &src);
  EXPECT_FALSE(ReadAll(f.get(), *cid, milliseconds(2000)).ok());
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        auto jobs = src->Jobs();
        return jobs.size() == 1 && jobs[0].status == pb::JOB_STATUS_FAILED;
      },
      milliseconds(5000)));
  auto got = ReadAll(f.get(), *cid, milliseconds(2000));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.error().message().find("ended FAILED: no miner answered the retrieval"),
            std::string::npos)
      << got.error().ToString();
  EXPECT_NE(got.error().message().find("ipfly thaw"), std::string::npos);
  EXPECT_EQ(pg_->counters().thaws, 1u) << "no automatic paid retry";
  // An explicit thaw starts a new job, which succeeds.
  pg_->SetThawMode(FakePowergate::ThawMode::kSucceed);
  auto j = src->Thaw(*cid, DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(j.ok()) << j.error().ToString();
  EXPECT_FALSE(j->job_id.empty());
  ASSERT_TRUE(testing::WaitFor([&] { return ReadAll(f.get(), *cid, milliseconds(500)).ok(); },
                               milliseconds(5000)));
}

TEST_F(PowergateTest, ACancelledThawIsReportedAsSuch) {
  auto cid = pg_->AddObject(RandomBytes(3000, 17), false, true);
  ASSERT_TRUE(cid.ok());
  pg_->SetThawMode(FakePowergate::ThawMode::kHold);
  PowergateSource* src = nullptr;
  auto f = MakeChain(PgConfig(false), &src);
  EXPECT_FALSE(ReadAll(f.get(), *cid, milliseconds(1000)).ok());
  ASSERT_EQ(pg_->JobIds().size(), 1u);
  ASSERT_TRUE(pg_->CancelJob(pg_->JobIds()[0]).ok());
  ASSERT_TRUE(testing::WaitFor(
      [&] { return !src->Jobs().empty() && src->Jobs()[0].status == pb::JOB_STATUS_CANCELED; },
      milliseconds(5000)));
  auto got = ReadAll(f.get(), *cid, milliseconds(1000));
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code(), Errc::kFailedPrecondition) << got.error().ToString();
  EXPECT_NE(got.error().message().find("ended CANCELED: canceled by user"), std::string::npos)
      << got.error().ToString();
  EXPECT_EQ(pg_->counters().thaws, 1u);
}

TEST_F(PowergateTest, RestartDuringThawResumesWatchingTheJob) {
  auto data = RandomBytes(262144 + 9, 11);
  auto cid = pg_->AddObject(data, false, true);
  ASSERT_TRUE(cid.ok());
  pg_->SetThawMode(FakePowergate::ThawMode::kHold);
  auto pc = PgConfig(false);
  std::string job;
  {
    PowergateSource* src = nullptr;
    auto f = MakeChain(pc, &src);
    EXPECT_FALSE(ReadAll(f.get(), *cid, milliseconds(1000)).ok());
    ASSERT_EQ(src->Jobs().size(), 1u);
    job = src->Jobs()[0].job_id;
  }  // "crash": the source and its watcher are gone, the job lives on in Powergate
  auto persisted = PowergateSource::LoadJobs(pc.state_dir);
  ASSERT_TRUE(persisted.ok());
  ASSERT_EQ(persisted->size(), 1u);
  EXPECT_EQ((*persisted)[0].job_id, job);
  EXPECT_NE((*persisted)[0].status, pb::JOB_STATUS_SUCCESS);

  PowergateSource* src = nullptr;
  auto f = MakeChain(pc, &src);
  auto got = ReadAll(f.get(), *cid, milliseconds(1000));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.error().message().find("job " + job), std::string::npos) << got.error().ToString();
  EXPECT_EQ(pg_->counters().thaws, 1u) << "the restarted source must reuse the job";
  ASSERT_TRUE(pg_->CompleteJob(job).ok());
  ASSERT_TRUE(testing::WaitFor(
      [&] { return !src->Jobs().empty() && src->Jobs()[0].status == pb::JOB_STATUS_SUCCESS; },
      milliseconds(5000)))
      << "the new source did not pick the job up";
  got = ReadAll(f.get(), *cid);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, data);
  auto after = PowergateSource::LoadJobs(pc.state_dir);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)[0].status, pb::JOB_STATUS_SUCCESS);
}

TEST_F(PowergateTest, AThawPowergateAlreadyRunsIsAdoptedNotPaidTwice) {
  auto data = RandomBytes(100'000, 16);
  auto cid = pg_->AddObject(data, false, true);
  ASSERT_TRUE(cid.ok());
  pg_->SetThawMode(FakePowergate::ThawMode::kHold);
  // Someone else (another host, a lost state_dir) started a retrieval.
  pb::StorageConfig cfg;
  cfg.mutable_hot()->set_enabled(true);
  cfg.mutable_hot()->set_allow_unfreeze(true);
  cfg.mutable_hot()->set_unfreeze_max_price(10);
  cfg.mutable_cold()->set_enabled(true);
  auto id =
      MakeClient()->ApplyStorageConfig(cid->ToString(), cfg, true, DeadlineIn(milliseconds(3000)));
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(
      testing::WaitFor([&] { return pg_->JobState(*id) == "EXECUTING"; }, milliseconds(3000)));
  PowergateSource* src = nullptr;
  auto f = MakeChain(PgConfig(false), &src);
  auto got = ReadAll(f.get(), *cid, milliseconds(1000));
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.error().message().find("job " + *id + " (EXECUTING)"), std::string::npos)
      << got.error().ToString();
  EXPECT_EQ(pg_->counters().thaws, 1u);
  ASSERT_TRUE(pg_->CompleteJob(*id).ok());
  ASSERT_TRUE(testing::WaitFor([&] { return ReadAll(f.get(), *cid, milliseconds(500)).ok(); },
                               milliseconds(5000)));
  EXPECT_EQ(pg_->counters().thaws, 1u);
}

TEST_F(PowergateTest, MakeFetcherAddsTheColdSourceLastWithTokenFromEnv) {
  auto data = RandomBytes(600'000, 12);
  auto cid = pg_->AddObject(data, true, false);
  ASSERT_TRUE(cid.ok());
  Config cfg = Config::Defaults();
  cfg.store_dir = tmp_ / "store";
  cfg.cache_dir = tmp_ / "store/cache";
  cfg.sources = {
      *SourceSpec::Parse("gateway=http://127.0.0.1:" + std::to_string(testing::FreePort()))};
  cfg.fetch.retries = 0;
  cfg.fetch.block_timeout_ms = 1000;
  cfg.powergate.address = pg_->address();
  cfg.powergate.token_env = "IPFLY_PG_TEST_TOKEN";
  ::setenv("IPFLY_PG_TEST_TOKEN", "test-token", 1);
  auto f = MakeFetcher(cfg);
  ::unsetenv("IPFLY_PG_TEST_TOKEN");
  ASSERT_TRUE(f.ok()) << f.error().ToString();
  auto st = (*f)->stats();
  ASSERT_EQ(st.sources.size(), 2u);
  EXPECT_EQ(st.sources[1].name, "powergate " + pg_->address());
  auto got = ReadAll(f->get(), *cid);
  ASSERT_TRUE(got.ok()) << got.error().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_TRUE(fs::exists(tmp_ / "store/powergate")) << "default state_dir";
}

// --- FUSE: a layer whose blocks exist nowhere in IPFS ----------------------------------------

struct Layer {
  Bytes blob, index;
  std::string tree;
};

Layer MakeLayer(const TempDir& tmp) {
  Layer l;
  l.tree = tmp / "tree";
  fs::create_directories(l.tree + "/etc");
  fs::create_directories(l.tree + "/data");
  std::ofstream(l.tree + "/etc/hello.txt") << "hello from filecoin\n";
  testing::WriteRandomFile(l.tree + "/data/big.bin", 2 << 20, 77);
  auto r = testing::Sh("tar --sort=name --owner=0 --group=0 --numeric-owner -C " + l.tree +
                       " -cf - . | gzip -n > " + tmp / "layer.tgz");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::string b = Slurp(tmp / "layer.tgz");
  l.blob.assign(b.begin(), b.end());
  layer::BuildOptions bo;
  bo.span = 256 << 10;
  layer::LayerIndexBuilder builder(bo);
  EXPECT_TRUE(builder.Feed(l.blob).ok());
  auto idx = builder.Finish();
  EXPECT_TRUE(idx.ok());
  auto blob_node = unixfs::ImportBytes(l.blob, *unixfs::ImportProfile::ByName("kubo-v1"), nullptr);
  idx->blob_cid = blob_node->cid;
  l.index = idx->Encode();
  return l;
}

class PowergateFuseTest : public PowergateTest {
 protected:
  // Mounts the layer (blob + index CIDs) read through `f`; returns the layer directory.
  void MountLayer(Fetcher* f, const mf::Cid& blob, const mf::Cid& index) {
    reader_ = std::make_unique<UnixfsReader>(f);
    auto size = reader_->Size(index, DeadlineIn(milliseconds(5000)));
    ASSERT_TRUE(size.ok()) << size.error().ToString();
    Bytes enc(*size);
    ASSERT_TRUE(reader_->ReadAt(index, 0, enc, DeadlineIn(milliseconds(5000))).ok());
    auto idx = layer::LayerIndex::Decode(enc);
    ASSERT_TRUE(idx.ok()) << idx.error().ToString();
    auto shared = std::make_shared<const layer::LayerIndex>(std::move(*idx));
    auto lr = layer::LayerReader::Open(
        shared, std::make_unique<layer::UnixfsBlobSource>(reader_.get(), blob));
    ASSERT_TRUE(lr.ok()) << lr.error().ToString();
    auto tree = fusefs::LayerTree::Make("pg-layer", shared, std::move(*lr), milliseconds(3000));
    ASSERT_TRUE(tree.ok()) << tree.error().ToString();
    mount_ = std::make_unique<fusefs::TestMount>();
    ASSERT_MOUNTED(*mount_);
    ASSERT_TRUE(mount_->fs().Attach("layer", *tree).ok());
  }
  void TearDown() override {
    mount_.reset();
    reader_.reset();
  }
  std::unique_ptr<UnixfsReader> reader_;
  std::unique_ptr<fusefs::TestMount> mount_;
};

TEST_F(PowergateFuseTest, FuseReadOfALayerOnlyPowergateHas) {
  fusefs::RequireFuse();
  if (HasFatalFailure()) return;
  Layer l = MakeLayer(tmp_);
  auto blob = pg_->AddObject(l.blob, true, true);
  auto index = pg_->AddObject(l.index, true, true);
  ASSERT_TRUE(blob.ok() && index.ok());
  PowergateSource* src = nullptr;
  auto f = MakeChain(PgConfig(false), &src);
  MountLayer(f.get(), *blob, *index);
  if (HasFatalFailure()) return;
  EXPECT_EQ(Slurp(*mount_ / "layer/etc/hello.txt"), "hello from filecoin\n");
  EXPECT_EQ(Slurp(*mount_ / "layer/data/big.bin"), Slurp(l.tree + "/data/big.bin"));
  EXPECT_EQ(src->stats().objects_loaded, 2u);  // the index and the blob, one Get each
  EXPECT_EQ(pg_->counters().get, 2u);
}

TEST_F(PowergateFuseTest, FuseReadDuringThawFailsThenWorks) {
  fusefs::RequireFuse();
  if (HasFatalFailure()) return;
  Layer l = MakeLayer(tmp_);
  auto blob = pg_->AddObject(l.blob, false, true);  // cold only: needs a thaw
  auto index = pg_->AddObject(l.index, true, true);
  ASSERT_TRUE(blob.ok() && index.ok());
  pg_->SetThawMode(FakePowergate::ThawMode::kHold);
  PowergateSource* src = nullptr;
  auto f = MakeChain(PgConfig(true), &src);
  MountLayer(f.get(), *blob, *index);
  if (HasFatalFailure()) return;
  auto t0 = Clock::now();
  std::ifstream in(*mount_ / "layer/etc/hello.txt");
  std::string s;
  EXPECT_FALSE(std::getline(in, s)) << "read must fail while the blob is frozen";
  EXPECT_LT(Clock::now() - t0, milliseconds(3000));
  ASSERT_EQ(pg_->JobIds().size(), 1u);
  ASSERT_TRUE(pg_->CompleteJob(pg_->JobIds()[0]).ok());
  ASSERT_TRUE(testing::WaitFor(
      [&] { return !src->Jobs().empty() && src->Jobs()[0].status == pb::JOB_STATUS_SUCCESS; },
      milliseconds(5000)));
  EXPECT_EQ(Slurp(*mount_ / "layer/etc/hello.txt"), "hello from filecoin\n");
  EXPECT_EQ(Slurp(*mount_ / "layer/data/big.bin"), Slurp(l.tree + "/data/big.bin"));
  EXPECT_GT(src->stats().proxy_blocks, 0u);
}

}  // namespace
}  // namespace ipfly::fetch::powergate
