#include "ipfs_fetch/gateway_source.h"

#include <gtest/gtest.h>

#include <chrono>
#include <thread>

#include "ipfs_fetch/retry_hint.h"
#include "tests/support/fault_http_server.h"

namespace ipfly::fetch {
namespace {

using std::chrono::milliseconds;
using test::BlockServer;
using Fault = test::BlockServer::Fault;

constexpr auto kSlack = milliseconds(1500);

Bytes Pattern(size_t n, uint8_t seed) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(seed + i * 31 + (i >> 8));
  return b;
}

Block MakeBlock(size_t n, uint8_t seed) {
  auto b = Block::Make(mf::kCodecRaw, Pattern(n, seed));
  EXPECT_TRUE(b.ok());
  return *b;
}

class GatewaySourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (uint8_t i = 0; i < 6; ++i) {
      blocks_.push_back(MakeBlock(1000 + i * 100, i));
      server_.Put(blocks_.back().cid(),
                  Bytes(blocks_.back().data().begin(), blocks_.back().data().end()));
    }
    ASSERT_TRUE(server_.Start().ok());
    source_ = std::make_unique<GatewaySource>(server_.base_url(), http_);
  }
  Deadline Soon() { return Clock::now() + milliseconds(10'000); }

  std::shared_ptr<HttpClient> http_ = std::make_shared<HttpClient>();
  BlockServer server_;
  std::vector<Block> blocks_;
  std::unique_ptr<GatewaySource> source_;
};

TEST_F(GatewaySourceTest, GetsAndVerifiesARawBlock) {
  auto b = source_->Get(blocks_[0].cid(), Soon());
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_EQ(b->cid(), blocks_[0].cid());
  EXPECT_TRUE(std::equal(b->data().begin(), b->data().end(), blocks_[0].data().begin(),
                         blocks_[0].data().end()));
  auto req = server_.last_request();
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->method, "GET");
  EXPECT_EQ(req->path, "/ipfs/" + blocks_[0].cid().ToString());
  EXPECT_EQ(req->Query("format").value_or(""), "raw");
  EXPECT_EQ(req->Header("Accept").value_or(""), "application/vnd.ipld.raw");
}

TEST_F(GatewaySourceTest, TrailingSlashInBaseUrlIsDropped) {
  GatewaySource gw(server_.base_url() + "/", http_);
  EXPECT_EQ(gw.name(), "gateway " + server_.base_url());
  EXPECT_TRUE(gw.Get(blocks_[0].cid(), Soon()).ok());
}

TEST_F(GatewaySourceTest, CorruptBlockIsRejected) {
  server_.SetFault(blocks_[1].cid(), Fault::kCorrupt);
  auto b = source_->Get(blocks_[1].cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kCorrupt);
  EXPECT_NE(b.error().message().find(server_.base_url()), std::string::npos)
      << "the message names the gateway: " << b.error().message();
}

TEST_F(GatewaySourceTest, WrongBlockIsRejected) {
  server_.SetFault(blocks_[1].cid(), Fault::kWrongBlock);
  auto b = source_->Get(blocks_[1].cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kCorrupt);
}

TEST_F(GatewaySourceTest, NotFound) {
  server_.SetFault(blocks_[2].cid(), Fault::kNotFound);
  auto b = source_->Get(blocks_[2].cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kNotFound);
  // A block the server never had: also 404.
  Block other = MakeBlock(10, 99);
  b = source_->Get(other.cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kNotFound);
}

TEST_F(GatewaySourceTest, TooManyRequestsCarriesRetryAfter) {
  BlockServer::FaultOptions o;
  o.retry_after_s = 3;
  server_.SetFault(blocks_[2].cid(), Fault::kTooManyRequests, o);
  auto b = source_->Get(blocks_[2].cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kUnavailable);
  ASSERT_TRUE(RetryAfterHint(b.error()).has_value()) << b.error().message();
  EXPECT_EQ(*RetryAfterHint(b.error()), milliseconds(3000));
}

TEST_F(GatewaySourceTest, ServerErrorsAreUnavailable) {
  server_.SetFault(blocks_[2].cid(), Fault::kServerError);
  auto b = source_->Get(blocks_[2].cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kUnavailable);
  EXPECT_FALSE(RetryAfterHint(b.error()).has_value());

  server_.SetFault(blocks_[2].cid(), Fault::kBadGateway);
  b = source_->Get(blocks_[2].cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kUnavailable);
  EXPECT_TRUE(RetryAfterHint(b.error()).has_value());
}

TEST_F(GatewaySourceTest, ResetIsUnavailable) {
  server_.SetFault(blocks_[3].cid(), Fault::kReset);
  auto b = source_->Get(blocks_[3].cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kUnavailable) << b.error().ToString();
}

TEST_F(GatewaySourceTest, SlowBeyondTheDeadlineTimesOutInTime) {
  BlockServer::FaultOptions o;
  o.slow_ms = 100;
  o.chunk_bytes = 10;  // 1300 bytes would take 13 s
  server_.SetFault(blocks_[3].cid(), Fault::kSlow, o);
  auto start = Clock::now();
  auto b = source_->Get(blocks_[3].cid(), Clock::now() + milliseconds(500));
  auto elapsed = Clock::now() - start;
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kTimeout) << b.error().ToString();
  EXPECT_GE(elapsed, milliseconds(450));
  EXPECT_LT(elapsed, milliseconds(500) + kSlack);
}

TEST_F(GatewaySourceTest, HangTimesOutInTime) {
  server_.SetFault(blocks_[3].cid(), Fault::kHang);
  auto start = Clock::now();
  auto b = source_->Get(blocks_[3].cid(), Clock::now() + milliseconds(300));
  auto elapsed = Clock::now() - start;
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kTimeout);
  EXPECT_LT(elapsed, milliseconds(300) + kSlack);
}

TEST_F(GatewaySourceTest, OversizedBlockIsTooLarge) {
  Bytes big = Pattern(kMaxBlockSize + 1, 7);
  mf::Cid cid = mf::Cid::V1(mf::kCodecRaw, mf::Multihash::Sha256Of(big));
  server_.Put(cid, big);
  auto b = source_->Get(cid, Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kTooLarge) << b.error().ToString();
}

TEST_F(GatewaySourceTest, IdentityCidsAreNeverFetched) {
  auto mh = mf::Multihash::Identity(AsBytes("inline"));
  ASSERT_TRUE(mh.ok());
  mf::Cid cid = mf::Cid::V1(mf::kCodecRaw, *mh);
  uint64_t before = server_.http().requests_served();
  auto b = source_->Get(cid, Soon());
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_EQ(AsString(b->data()), "inline");
  EXPECT_EQ(server_.http().requests_served(), before);
}

TEST_F(GatewaySourceTest, StreamsACarAndVerifiesEachBlock) {
  const mf::Cid& root = blocks_[0].cid();
  server_.SetCar(root, {blocks_[0].cid(), blocks_[1].cid(), blocks_[2].cid(), blocks_[3].cid()});
  std::vector<mf::Cid> got;
  Status s = source_->StreamDag(root, EntityRange{100, 5000}, Soon(), [&](const Block& b) {
    got.push_back(b.cid());
    return OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  ASSERT_EQ(got.size(), 4u);
  for (size_t i = 0; i < 4; ++i) EXPECT_EQ(got[i], blocks_[i].cid());
  auto req = server_.last_request();
  ASSERT_TRUE(req.has_value());
  EXPECT_EQ(req->Query("format").value_or(""), "car");
  EXPECT_EQ(req->Query("dag-scope").value_or(""), "entity");
  EXPECT_EQ(req->Query("entity-bytes").value_or(""), "100:5000");
  EXPECT_EQ(req->Header("Accept").value_or(""),
            "application/vnd.ipld.car; version=1; order=dfs; dups=y");

  s = source_->StreamDag(root, EntityRange{4096, EntityRange::kToEnd}, Soon(),
                         [&](const Block&) { return OkStatus(); });
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(server_.last_request()->Query("entity-bytes").value_or(""), "4096:*");
  s = source_->StreamDag(root, EntityRange{}, Soon(), [&](const Block&) { return OkStatus(); });
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(server_.last_request()->Query("entity-bytes").has_value());
}

TEST_F(GatewaySourceTest, TruncatedCarDeliversTheVerifiedPrefixThenFails) {
  const mf::Cid& root = blocks_[0].cid();
  std::vector<mf::Cid> all;
  for (const auto& b : blocks_) all.push_back(b.cid());
  server_.SetCar(root, all);
  server_.SetFault(root, Fault::kTruncatedCar);
  std::vector<mf::Cid> got;
  Status s = source_->StreamDag(root, EntityRange{}, Soon(), [&](const Block& b) {
    got.push_back(b.cid());
    return OkStatus();
  });
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.error().code() == Errc::kUnavailable || s.error().code() == Errc::kCorrupt)
      << s.error().ToString();
  ASSERT_EQ(got.size(), all.size() / 2);
  for (size_t i = 0; i < got.size(); ++i) EXPECT_EQ(got[i], all[i]);
}

TEST_F(GatewaySourceTest, CorruptBlockInCarStopsTheStreamAfterTheGoodOnes) {
  // The CAR for blocks_[4] lists two good blocks, then blocks_[4] itself (corrupted by the fault).
  const mf::Cid& root = blocks_[4].cid();
  server_.SetCar(root, {blocks_[0].cid(), blocks_[1].cid(), root, blocks_[2].cid()});
  server_.SetFault(root, Fault::kCorrupt);
  std::vector<mf::Cid> got;
  Status s = source_->StreamDag(root, EntityRange{}, Soon(), [&](const Block& b) {
    got.push_back(b.cid());
    return OkStatus();
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kCorrupt) << s.error().ToString();
  EXPECT_EQ(got.size(), 2u);
}

TEST_F(GatewaySourceTest, NonCarAnswerIsUnsupported) {
  const mf::Cid& root = blocks_[0].cid();
  BlockServer::FaultOptions o;
  o.content_type = "text/html";
  server_.SetFault(root, Fault::kNone, o);
  int calls = 0;
  Status s = source_->StreamDag(root, EntityRange{}, Soon(), [&](const Block&) {
    ++calls;
    return OkStatus();
  });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnsupported);
  EXPECT_EQ(calls, 0);
}

TEST_F(GatewaySourceTest, StreamErrorsMapLikeGet) {
  const mf::Cid& root = blocks_[0].cid();
  server_.SetFault(root, Fault::kNotFound);
  Status s =
      source_->StreamDag(root, EntityRange{}, Soon(), [](const Block&) { return OkStatus(); });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kNotFound);
  server_.SetFault(root, Fault::kTooManyRequests);
  s = source_->StreamDag(root, EntityRange{}, Soon(), [](const Block&) { return OkStatus(); });
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kUnavailable);
  EXPECT_TRUE(RetryAfterHint(s.error()).has_value());
}

// ---------------------------------------------------------------------------------------------
// MultiGatewaySource

class MultiGatewayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    block_ = MakeBlock(5000, 42);
    for (auto* s : {&a_, &b_}) {
      s->Put(block_.cid(), Bytes(block_.data().begin(), block_.data().end()));
      ASSERT_TRUE(s->Start().ok());
    }
  }
  std::unique_ptr<MultiGatewaySource> Make(milliseconds hedge) {
    std::vector<std::shared_ptr<GatewaySource>> gws = {
        std::make_shared<GatewaySource>(a_.base_url(), http_),
        std::make_shared<GatewaySource>(b_.base_url(), http_)};
    return std::make_unique<MultiGatewaySource>(std::move(gws), hedge);
  }
  Deadline Soon() { return Clock::now() + milliseconds(10'000); }

  std::shared_ptr<HttpClient> http_ = std::make_shared<HttpClient>();
  BlockServer a_, b_;
  Block block_ = MakeBlock(1, 1);
};

TEST_F(MultiGatewayTest, FailsOverToTheSecondGatewayWhenTheFirstIsCorrupt) {
  a_.SetFault(block_.cid(), Fault::kCorrupt);
  auto src = Make(milliseconds(0));
  auto b = src->Get(block_.cid(), Soon());
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_EQ(b->cid(), block_.cid());
  EXPECT_EQ(a_.requests_for(block_.cid()), 1u);
  EXPECT_EQ(b_.requests_for(block_.cid()), 1u);
}

TEST_F(MultiGatewayTest, FirstGatewayIsUsedWhenItWorks) {
  auto src = Make(milliseconds(0));
  ASSERT_TRUE(src->Get(block_.cid(), Soon()).ok());
  EXPECT_EQ(a_.requests_for(block_.cid()), 1u);
  EXPECT_EQ(b_.requests_for(block_.cid()), 0u);
}

TEST_F(MultiGatewayTest, CombinedErrors) {
  a_.SetFault(block_.cid(), Fault::kNotFound);
  b_.SetFault(block_.cid(), Fault::kNotFound);
  auto src = Make(milliseconds(0));
  auto b = src->Get(block_.cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kNotFound);

  b_.SetFault(block_.cid(), Fault::kTooManyRequests);
  b = src->Get(block_.cid(), Soon());
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kUnavailable);
  EXPECT_EQ(RetryAfterHint(b.error()), milliseconds(2000));
  EXPECT_NE(b.error().message().find(a_.base_url()), std::string::npos);
  EXPECT_NE(b.error().message().find(b_.base_url()), std::string::npos);
}

TEST_F(MultiGatewayTest, HedgingReturnsTheFastGatewaysBlockAndAbortsTheSlowOne) {
  BlockServer::FaultOptions slow;
  slow.delay_ms = 5000;
  a_.SetFault(block_.cid(), Fault::kDelay, slow);
  auto src = Make(milliseconds(100));
  auto start = Clock::now();
  auto b = src->Get(block_.cid(), Soon());
  auto elapsed = Clock::now() - start;
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_EQ(b->cid(), block_.cid());
  EXPECT_GE(elapsed, milliseconds(90));
  EXPECT_LT(elapsed, milliseconds(1500)) << "the slow gateway must not be waited for";
  EXPECT_EQ(b_.requests_for(block_.cid()), 1u);
}

TEST_F(MultiGatewayTest, HedgingFailsOverAtOnceWhenTheFirstFails) {
  a_.SetFault(block_.cid(), Fault::kServerError);
  auto src = Make(milliseconds(3000));
  auto start = Clock::now();
  auto b = src->Get(block_.cid(), Soon());
  auto elapsed = Clock::now() - start;
  ASSERT_TRUE(b.ok()) << b.error().ToString();
  EXPECT_LT(elapsed, milliseconds(1000)) << "no waiting for the hedge delay after a failure";
}

TEST_F(MultiGatewayTest, HedgingWithoutHedgeDelayExpiryUsesOnlyTheFirst) {
  auto src = Make(milliseconds(2000));
  ASSERT_TRUE(src->Get(block_.cid(), Soon()).ok());
  EXPECT_EQ(b_.requests_for(block_.cid()), 0u);
}

TEST_F(MultiGatewayTest, HedgedGetRespectsTheDeadline) {
  a_.SetFault(block_.cid(), Fault::kHang);
  b_.SetFault(block_.cid(), Fault::kHang);
  auto src = Make(milliseconds(50));
  auto start = Clock::now();
  auto b = src->Get(block_.cid(), Clock::now() + milliseconds(400));
  auto elapsed = Clock::now() - start;
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kTimeout) << b.error().ToString();
  EXPECT_LT(elapsed, milliseconds(400) + kSlack);
}

TEST_F(MultiGatewayTest, StreamFailsOverOnlyBeforeTheFirstBlock) {
  Block other = MakeBlock(300, 3);
  for (auto* s : {&a_, &b_}) {
    s->Put(other.cid(), Bytes(other.data().begin(), other.data().end()));
    s->SetCar(block_.cid(), {block_.cid(), other.cid()});
  }
  a_.SetFault(block_.cid(), Fault::kNotFound);
  auto src = Make(milliseconds(0));
  int n = 0;
  Status s = src->StreamDag(block_.cid(), EntityRange{}, Soon(), [&](const Block&) {
    ++n;
    return OkStatus();
  });
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_EQ(n, 2);
}

TEST_F(MultiGatewayTest, FromConfigKeepsOnlyGateways) {
  std::vector<SourceSpec> specs = {{SourceSpec::Kind::kGateway, a_.base_url()},
                                   {SourceSpec::Kind::kKubo, "http://127.0.0.1:1"},
                                   {SourceSpec::Kind::kGateway, b_.base_url()}};
  FetchConfig cfg;
  cfg.hedge_ms = 10;
  auto src = MultiGatewaySource::FromConfig(specs, cfg, http_);
  EXPECT_EQ(src->size(), 2u);
  EXPECT_EQ(src->name(), "gateways [" + a_.base_url() + ", " + b_.base_url() + "]");
  EXPECT_TRUE(src->Get(block_.cid(), Soon()).ok());
}

}  // namespace
}  // namespace ipfly::fetch
