// The snapshotter and the registry use the Powergate cold fallback when [powergate] is
// configured (both build their fetcher with MakeFetcher) and show its metrics on /metrics.
// Real parts: the snapshotter's FUSE lazy layers, the registry's HTTP server, the fake Powergate.
#include <gtest/gtest.h>
#include <httplib.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <thread>

#include "core/base/log.h"
#include "core/unixfs/importer.h"
#include "layer/layer_index.h"
#include "registry_shim/server.h"
#include "snapshotter/fuse_lazy_layers.h"
#include "tests/support/fake_powergate.h"
#include "tests/support/process.h"

namespace ipfly {
namespace {

namespace fs = std::filesystem;
using testing::FakePowergate;
using testing::TempDir;

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class PowergateServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitLogging("warn");
    auto pg = FakePowergate::Start();
    ASSERT_TRUE(pg.ok()) << pg.error().ToString();
    pg_ = std::move(*pg);
    config_ = Config::Defaults();
    config_.store_dir = tmp_ / "store";
    config_.cache_dir = tmp_ / "store/cache";
    config_.sources.clear();  // no IPFS source has anything: only Powergate
    config_.fetch.timeout_ms = 5000;
    config_.fetch.block_timeout_ms = 2000;
    config_.fetch.retries = 1;
    config_.fetch.retry_backoff_ms = 20;
    config_.powergate.address = pg_->address();
    config_.powergate.token = "test-token";
    config_.powergate.unfreeze_max_price = 1000;
    config_.powergate.job_poll_ms = 50;
  }
  TempDir tmp_;
  std::unique_ptr<FakePowergate> pg_;
  Config config_;
};

TEST_F(PowergateServicesTest, SnapshotterLazyLayerReadsFromPowergate) {
  ASSERT_EQ(geteuid(), 0u) << "needs root (FUSE allow_other), like the snapshotter";
  const std::string tree = tmp_ / "tree";
  fs::create_directories(tree + "/etc");
  std::ofstream(tree + "/etc/motd") << "served from filecoin\n";
  testing::WriteRandomFile(tree + "/etc/big.bin", 1 << 20, 5);
  auto r = testing::Sh("tar --sort=name --owner=0 --group=0 --numeric-owner -C " + tree +
                       " -cf - . | gzip -n > " + tmp_ / "l.tgz");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string blob = Slurp(tmp_ / "l.tgz");
  layer::LayerIndexBuilder builder;
  ASSERT_TRUE(builder.Feed(AsBytes(blob)).ok());
  auto idx = builder.Finish();
  ASSERT_TRUE(idx.ok());
  auto blob_cid = pg_->AddObject(AsBytes(blob), true, true);
  ASSERT_TRUE(blob_cid.ok());
  idx->blob_cid = *blob_cid;
  Bytes enc = idx->Encode();
  auto index_cid = pg_->AddObject(enc, true, true);
  ASSERT_TRUE(index_cid.ok());

  auto lazy = snapshotter::MakeFuseLazyLayers(config_, tmp_ / "root");
  ASSERT_TRUE(lazy.ok()) << lazy.error().ToString();
  snapshotter::Labels labels = {{"containerd.io/snapshot.ref", "sha256:chain"},
                                {"containerd.io/snapshot/ipfly.cid", blob_cid->ToString()},
                                {"containerd.io/snapshot/ipfly.index", index_cid->ToString()}};
  auto rl = (*lazy)->Resolve(labels);
  ASSERT_TRUE(rl.ok()) << rl.error().ToString();
  auto dir = (*lazy)->Attach("1", *rl);
  ASSERT_TRUE(dir.ok()) << dir.error().ToString();
  EXPECT_EQ(Slurp(*dir + "/etc/motd"), "served from filecoin\n");
  EXPECT_EQ(Slurp(*dir + "/etc/big.bin"), Slurp(tree + "/etc/big.bin"));
  std::string metrics = (*lazy)->MetricsText();
  EXPECT_NE(metrics.find("ipfly_powergate_objects_loaded_total 2"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("ipfly_powergate_cold_retrievals_in_flight 0"), std::string::npos);
  ASSERT_TRUE((*lazy)->Detach("1").ok());
}

TEST_F(PowergateServicesTest, RegistryMetricsShowTheColdSource) {
  config_.registry.root = tmp_ / "registry";
  registry::ServerOptions so;
  so.config = config_;
  so.threads = 4;
  auto srv = registry::RegistryServer::Create(so);
  ASSERT_TRUE(srv.ok()) << srv.error().ToString();
  auto port = (*srv)->Bind("127.0.0.1", 0);
  ASSERT_TRUE(port.ok());
  std::thread serve([&] { (void)(*srv)->Serve(); });
  httplib::Client http("127.0.0.1", *port);
  auto m = http.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_EQ(m->status, 200);
  // The cold source is the last source of the registry's fetch chain, with its own families.
  EXPECT_NE(m->body.find("source=\"powergate " + pg_->address() + "\""), std::string::npos)
      << m->body;
  EXPECT_NE(m->body.find("ipfly_powergate_cold_retrievals_in_flight 0"), std::string::npos);
  EXPECT_NE(m->body.find("ipfly_powergate_thaws_started_total 0"), std::string::npos);
  (*srv)->Stop();
  serve.join();
}

}  // namespace
}  // namespace ipfly
