// `ipfly archive REPO:TAG` with a real ipfly-registry process (IPFLY_REGISTRY_BIN) and the
// busybox test image pushed with skopeo: it stages exactly the image's blob CIDs (config and
// layers) and the layers' index CIDs, and gives each a cold storage config in the fake Powergate.
#include <mutex>

#include "ipfs_fetch/make_fetcher.h"
#include "ipfs_fetch/powergate/tests/powergate_registry_util.h"
#include "ipfs_fetch/unixfs_reader.h"

#ifndef IPFLY_CLI
#error "IPFLY_CLI must name the ipfly binary under test"
#endif

namespace ipfly::registry::test {
namespace {

// `ipfly archive REPO:TAG` resolves the image through the registry and stages (StageCid) and
// archives (cold storage config) the config blob, every layer blob and every layer index: the
// whole image can be thawed and pulled from Filecoin. The fake Powergate does not hold the
// image; like powd's go-ipfs node it pins StageCid'd CIDs "from the network", here the
// registry's own trustless gateway (read with ipfly's fetcher, so every block is verified).
TEST(PowergateRegistry, ArchiveImageStagesExactlyItsBlobs) {
  InitLogging("warn");
  TempDir tmp;
  auto pg = FakePowergate::Start();
  ASSERT_TRUE(pg.ok()) << pg.error().ToString();
  Registry reg;
  reg.Start();
  PushBusybox(tmp, reg.host(), "pg/bb:1");
  if (HasFatalFailure()) return;
  const std::vector<BlobRef> blobs = ImageBlobs(reg, "pg/bb", "1");
  ASSERT_EQ(blobs.size(), 3u) << "config + 2 layers";

  // "The IPFS network": the registry's gateway.
  Config net = Config::Defaults();
  net.store_dir = tmp / "net-store";
  net.sources = {*SourceSpec::Parse("gateway=" + reg.url())};
  auto fetcher = fetch::MakeFetcher(net);
  ASSERT_TRUE(fetcher.ok()) << fetcher.error().ToString();
  fetch::UnixfsReader reader(fetcher->get());
  std::map<std::string, std::string> pinned_bytes;  // what the fake fetched, by CID
  std::mutex pinned_mu;
  (*pg)->SetNetwork([&](const std::string& cid_s) -> Result<Bytes> {
    auto cid = IPFLY_TRY(mf::Cid::Parse(cid_s));
    auto dl = fetch::DeadlineIn(seconds(20));
    uint64_t size = IPFLY_TRY(reader.Size(cid, dl));
    Bytes data(size);
    size_t n = IPFLY_TRY(reader.ReadAt(cid, 0, data, dl));
    if (n != size) return Corrupt("short read of " + cid_s);
    std::lock_guard lk(pinned_mu);
    pinned_bytes[cid_s] = std::string(AsString(data));
    return data;
  });

  std::set<std::string> expected;
  for (size_t i = 0; i < blobs.size(); ++i) {
    ASSERT_FALSE(blobs[i].cid.empty()) << blobs[i].digest;
    expected.insert(blobs[i].cid);
    if (i == 0) {
      EXPECT_TRUE(blobs[i].index_cid.empty()) << "the config is not a layer";
    } else {
      ASSERT_FALSE(blobs[i].index_cid.empty()) << "gzip layer " << blobs[i].digest << " indexed";
      expected.insert(blobs[i].index_cid);
    }
  }
  ASSERT_EQ(expected.size(), 5u);

  std::ofstream(tmp / "cli.toml") << "[store]\ndir = \"" << tmp / "cli-store"
                                  << "\"\n"
                                  << PowergateToml(**pg);
  auto r = RunCmd({IPFLY_CLI, "archive", "pg/bb:1", "--registry", reg.host(), "--wait", "--config",
                   tmp / "cli.toml"},
                  seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("image pg/bb:1: 5 CIDs"), std::string::npos) << r.out;

  // Exactly the image's CIDs, each staged once.
  std::vector<std::string> staged = (*pg)->StagedCids();
  EXPECT_EQ(std::set<std::string>(staged.begin(), staged.end()), expected);
  EXPECT_EQ(staged.size(), expected.size());
  EXPECT_EQ((*pg)->counters().apply, expected.size());
  for (const auto& cid : expected) {
    auto info = (*pg)->Inspect(cid);
    ASSERT_TRUE(info.has_value()) << cid;
    EXPECT_TRUE(info->has_config) << cid;
    EXPECT_TRUE(info->config_cold) << cid << ": a cold (Filecoin) storage config";
    EXPECT_FALSE(info->config_hot) << cid << ": archived without --hot";
    EXPECT_TRUE(info->cold) << cid << ": the archive job finished (--wait)";
    EXPECT_FALSE(info->hot) << cid;
    EXPECT_NE(r.out.find("archive " + cid + ": job "), std::string::npos) << r.out;
  }
  // The blobs the fake pinned are the registry's blobs (sha256 = their digests).
  for (const auto& b : blobs) {
    std::lock_guard lk(pinned_mu);
    ASSERT_TRUE(pinned_bytes.count(b.cid)) << b.cid;
    EXPECT_EQ(DigestOf(pinned_bytes[b.cid]), b.digest);
  }
  reg.Stop();
}

}  // namespace
}  // namespace ipfly::registry::test
