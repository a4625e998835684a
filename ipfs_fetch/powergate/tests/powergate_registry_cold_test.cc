// ipfly-registry (a real process, IPFLY_REGISTRY_BIN) configured with [powergate] serves a blob
// whose blocks only Powergate has, through its fetch chain, and answers a clear 503 naming the
// thaw job (without hanging) while the object is being retrieved from Filecoin.
#include "ipfs_fetch/powergate/tests/powergate_registry_util.h"

namespace ipfly::registry::test {
namespace {

// The registry serves a blob whose blocks exist only in Powergate. Scenario: push the image to a
// registry configured with [powergate] and no IPFS source, keep the layer bytes, stop it, wipe its
// block store and cache (the catalog stays), hand the layer bytes to the fake Powergate (same
// kubo-v1 import → same CID, asserted), restart. Layer 1 is hot in Powergate (Get + re-import),
// layer 2 is cold only (a thaw job, held until the test completes it).
TEST(PowergateRegistry, ServesBlobOnlyPowergateHas) {
  InitLogging("warn");
  TempDir tmp;
  testing::FakePowergateOptions po;
  auto pg = FakePowergate::Start(po);
  ASSERT_TRUE(pg.ok()) << pg.error().ToString();
  const std::string store = tmp / "store", cache = tmp / "cache";
  std::ofstream(tmp / "reg.toml") << "[store]\ndir = \"" << store << "\"\n"
                                  << "[cache]\ndir = \"" << cache << "\"\n"
                                  << "[fetch]\ntimeout_ms = 5000\nretries = 1\n"
                                  << "retry_backoff_ms = 50\n"
                                  << PowergateToml(**pg);
  Registry reg;
  reg.Start({"--config", tmp / "reg.toml"});
  PushBusybox(tmp, reg.host(), "cold/bb:1");
  if (HasFatalFailure()) return;
  const std::vector<BlobRef> blobs = ImageBlobs(reg, "cold/bb", "1");
  ASSERT_EQ(blobs.size(), 3u);
  const BlobRef& hot = blobs[1];   // busybox layer (~1 MB gzip: several blocks)
  const BlobRef& cold = blobs[2];  // the small layer
  std::map<std::string, std::string> bytes;
  for (const auto* b : {&hot, &cold}) {
    auto r = reg.Client()->Get("/v2/cold/bb/blobs/" + b->digest);
    ASSERT_EQ(St(r), 200);
    ASSERT_EQ(DigestOf(Body(r)), b->digest);
    bytes[b->digest] = Body(r);
  }
  ASSERT_GT(bytes[hot.digest].size(), 300'000u) << "want a multi-block layer";
  reg.Stop();
  fs::remove_all(store);
  fs::remove_all(cache);

  auto hc = (*pg)->AddObject(AsBytes(bytes[hot.digest]), /*hot=*/true, /*cold=*/true);
  ASSERT_TRUE(hc.ok());
  ASSERT_EQ(hc->ToString(), hot.cid);
  auto cc = (*pg)->AddObject(AsBytes(bytes[cold.digest]), /*hot=*/false, /*cold=*/true);
  ASSERT_TRUE(cc.ok());
  ASSERT_EQ(cc->ToString(), cold.cid);
  (*pg)->SetThawMode(FakePowergate::ThawMode::kHold);

  reg.Start({"--config", tmp / "reg.toml"});
  auto c = reg.Client();
  // Hot in Powergate: the exact bytes, through the cold path.
  auto r = c->Get("/v2/cold/bb/blobs/" + hot.digest);
  ASSERT_EQ(St(r), 200) << Body(r) << reg.log();
  EXPECT_EQ(DigestOf(Body(r)), hot.digest);
  EXPECT_EQ(Body(r), bytes[hot.digest]);
  EXPECT_GE((*pg)->counters().get, 1u);
  EXPECT_EQ(reg.Metric("ipfly_powergate_objects_loaded_total"), 1);

  // Cold only: a thaw starts; the GET fails fast with a 503 that names the job, twice, with one
  // job only.
  for (int i = 0; i < 2; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    r = c->Get("/v2/cold/bb/blobs/" + cold.digest);
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_EQ(St(r), 503) << Body(r);
    EXPECT_NE(Body(r).find("being retrieved from Filecoin, job job-1"), std::string::npos)
        << Body(r);
    EXPECT_TRUE(r && r->has_header("Retry-After"));
    EXPECT_LT(took, seconds(4)) << "a read during a thaw must not hang";
  }
  EXPECT_EQ((*pg)->counters().thaws, 1u);
  const std::string state = (*pg)->JobState("job-1");
  EXPECT_TRUE(state == "QUEUED" || state == "EXECUTING") << state << ": held until completed";

  ASSERT_TRUE((*pg)->CompleteJob("job-1").ok());
  std::string got;
  bool served = WaitFor(
      [&] {
        auto rr = c->Get("/v2/cold/bb/blobs/" + cold.digest);
        if (St(rr) != 200) return false;
        got = Body(rr);
        return true;
      },
      seconds(10));
  ASSERT_TRUE(served) << reg.log();
  EXPECT_EQ(DigestOf(got), cold.digest);
  EXPECT_EQ(got, bytes[cold.digest]);
  EXPECT_EQ((*pg)->counters().thaws, 1u);
  reg.Stop();
}

}  // namespace
}  // namespace ipfly::registry::test
