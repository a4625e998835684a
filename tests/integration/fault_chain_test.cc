// Faulty block sources end to end: the `ipfly` CLI with a misbehaving trustless gateway (the
// fault-injecting BlockServer) first and the real Helia gateway second. Corrupt data is never
// accepted or cached, the next source is used, and reads fail with a precise error after their
// deadline instead of hanging.
#include <gtest/gtest.h>

#include <chrono>
#include <mutex>

#include "core/block.h"
#include "core/unixfs/importer.h"
#include "tests/integration/ipfs_nodes.h"
#include "tests/support/fault_http_server.h"
#include "tests/support/process.h"

namespace ipfly::testing {
namespace {

using test::BlockFault;
using test::BlockServer;

// Collects every block an import produces.
class Collect : public BlockSink {
 public:
  Status Put(const Block& b) override {
    std::lock_guard lk(mu_);
    blocks.push_back(b);
    return OkStatus();
  }
  std::vector<Block> blocks;

 private:
  std::mutex mu_;
};

struct Served {
  std::string path;
  std::string content;
  mf::Cid root = mf::Cid::V1(mf::kCodecRaw, mf::Multihash::Sha256Of({}));
  std::vector<Block> blocks;
};

Served MakeFile(const TempDir& dir, uint64_t size, uint64_t seed) {
  Served s{dir / ("f" + std::to_string(seed)),
           "",
           mf::Cid::V1(mf::kCodecRaw, mf::Multihash::Sha256Of({})),
           {}};
  WriteRandomFile(s.path, size, seed);
  s.content = ReadFile(s.path);
  Collect c;
  auto profile = unixfs::ImportProfile::ByName("kubo-v1");
  auto node = unixfs::ImportFile(s.path, *profile, &c);
  EXPECT_TRUE(node.ok());
  s.root = node->cid;
  s.blocks = c.blocks;
  return s;
}

CommandResult Ipfly(std::vector<std::string> args) {
  args.insert(args.begin(), IpflyBin());
  return RunCmd(args, std::chrono::seconds(120));
}

class FaultChain : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_TRUE(server_.Start().ok());
    file_ = MakeFile(dir_, 6 * 256 * 1024 + 99, 5);
    for (const auto& b : file_.blocks)
      server_.Put(b.cid(), Bytes(b.data().begin(), b.data().end()));
    std::vector<mf::Cid> car;
    for (auto it = file_.blocks.rbegin(); it != file_.blocks.rend(); ++it) car.push_back(it->cid());
    server_.SetCar(file_.root, car);  // root first, then leaves: DFS order
    ASSERT_EQ(HeliaAdd(file_.path, "cid-version=1"), file_.root.ToString());
  }
  void TearDown() override { server_.Stop(); }

  TempDir dir_;
  BlockServer server_;
  Served file_;
};

TEST_F(FaultChain, CorruptSourceIsSkippedAndNeverCached) {
  server_.SetDefaultFault(BlockFault::kCorrupt);
  TempDir store;
  auto r =
      Ipfly({"get", file_.root.ToString(), "-o", dir_ / "out", "--store", store.path(), "--source",
             "gateway=" + server_.base_url(), "--source", "gateway=" + Nodes().gateway_url});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ReadFile(dir_ / "out") == file_.content);
  // Every block is now local (cache) and correct: read it back with no source at all.
  for (const auto& b : file_.blocks) {
    auto g = Ipfly({"block", "get", b.cid().ToString(), "--store", store.path()});
    ASSERT_EQ(g.exit_code, 0) << g.err;
    EXPECT_TRUE(g.out == std::string(AsString(b.data()))) << b.cid().ToString();
  }
}

TEST_F(FaultChain, WrongBlockAndResetFallBackToNextSource) {
  for (auto fault : {BlockFault::kWrongBlock, BlockFault::kReset, BlockFault::kNotFound,
                     BlockFault::kServerError}) {
    server_.SetDefaultFault(fault);
    TempDir store;
    auto r = Ipfly({"cat", file_.root.ToString(), "--offset", "300000", "--length", "700000",
                    "--store", store.path(), "--source", "gateway=" + server_.base_url(),
                    "--source", "gateway=" + Nodes().gateway_url});
    ASSERT_EQ(r.exit_code, 0) << static_cast<int>(fault) << ": " << r.err;
    EXPECT_TRUE(r.out == file_.content.substr(300000, 700000)) << static_cast<int>(fault);
  }
}

TEST_F(FaultChain, TruncatedCarIsCompletedBlockByBlock) {
  server_.SetFault(file_.root, BlockFault::kTruncatedCar);
  TempDir store;
  auto r = Ipfly({"get", file_.root.ToString(), "-o", dir_ / "t", "--store", store.path(),
                  "--source", "gateway=" + server_.base_url()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(ReadFile(dir_ / "t") == file_.content);
}

TEST_F(FaultChain, HangingOrThrottlingSourceFailsAtTheDeadline) {
  for (auto fault : {BlockFault::kHang, BlockFault::kTooManyRequests, BlockFault::kSlow}) {
    server_.SetDefaultFault(fault);
    TempDir store;
    auto t0 = std::chrono::steady_clock::now();
    auto r = Ipfly({"cat", file_.root.ToString(), "--store", store.path(), "--source",
                    "gateway=" + server_.base_url(), "--timeout", "3s"});
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    EXPECT_NE(r.exit_code, 0) << static_cast<int>(fault);
    EXPECT_LT(secs, 10.0) << "fault " << static_cast<int>(fault) << " took " << secs << " s";
    EXPECT_NE(r.err.find(file_.root.ToString()), std::string::npos)
        << "error must name the CID: " << r.err;
    EXPECT_TRUE(r.out.empty() || file_.content.starts_with(r.out)) << "wrong bytes written";
  }
}

}  // namespace
}  // namespace ipfly::testing
