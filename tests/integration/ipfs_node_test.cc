// ipfly against real IPFS implementations (js-ipfs RPC, Helia trustless gateway), through the
// `ipfly` CLI exactly as a user runs it.
#include <gtest/gtest.h>

#include <random>

#include "tests/integration/ipfs_nodes.h"
#include "tests/support/process.h"

namespace ipfly::testing {
namespace {

constexpr uint64_t kChunk = 256 * 1024;

CommandResult Ipfly(std::vector<std::string> args) {
  args.insert(args.begin(), IpflyBin());
  return RunCmd(args);
}

std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// `ipfly add --only-hash` must give the node's own CIDs, byte for byte, at every DAG shape edge.
TEST(IpfsNode, OnlyHashMatchesNodeAdd) {
  TempDir dir;
  std::vector<uint64_t> sizes = {
      0, 1, kChunk - 1, kChunk, kChunk + 1, 174 * kChunk, 174 * kChunk + 1};
  std::mt19937_64 rng(42);
  for (int i = 0; i < 3; ++i) sizes.push_back(rng() % (3 * kChunk));
  for (size_t i = 0; i < sizes.size(); ++i) {
    std::string f = dir / ("f" + std::to_string(i));
    WriteRandomFile(f, sizes[i], i + 1);
    SCOPED_TRACE("size " + std::to_string(sizes[i]));
    auto v1 = Ipfly({"add", "--only-hash", "-q", f});
    ASSERT_EQ(v1.exit_code, 0) << v1.err;
    EXPECT_EQ(Trim(v1.out), JsIpfsAdd(f, "cid-version=1&only-hash=true"));
    auto v0 = Ipfly({"add", "--only-hash", "-q", "--profile", "kubo-v0", f});
    ASSERT_EQ(v0.exit_code, 0) << v0.err;
    EXPECT_EQ(Trim(v0.out), JsIpfsAdd(f, "only-hash=true"));
    if (sizes[i] <= 174 * kChunk + 1) {  // unixfs-v1-2025 = 1 MiB chunks (width 1024 not reached)
      auto p25 = Ipfly({"add", "--only-hash", "-q", "--profile", "unixfs-v1-2025", f});
      ASSERT_EQ(p25.exit_code, 0) << p25.err;
      EXPECT_EQ(Trim(p25.out), JsIpfsAdd(f, "cid-version=1&chunker=size-1048576&only-hash=true"));
    }
  }
}

// Files the node added are read back through its gateway and its RPC API, at random ranges.
TEST(IpfsNode, CatAndGetThroughGatewayAndRpc) {
  TempDir dir;
  std::string f = dir / "data";
  const uint64_t size = 9 * 1024 * 1024 + 12345;
  WriteRandomFile(f, size, 7);
  std::string content = ReadFile(f);
  std::string gw_cid = HeliaAdd(f, "cid-version=1");
  std::string rpc_cid = JsIpfsAdd(f, "cid-version=1");
  ASSERT_FALSE(gw_cid.empty());
  ASSERT_EQ(gw_cid, rpc_cid);
  std::string rpc_v0 = JsIpfsAdd(f, "");
  ASSERT_EQ(rpc_v0.substr(0, 2), "Qm");

  struct Case {
    std::string name, cid, source;
  };
  std::vector<Case> cases = {{"gateway", gw_cid, "gateway=" + Nodes().gateway_url},
                             {"rpc", rpc_cid, "kubo=" + Nodes().rpc_url},
                             {"rpc-v0-dagpb-leaves", rpc_v0, "kubo=" + Nodes().rpc_url}};
  std::mt19937_64 rng(99);
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    TempDir store;  // empty embedded store: everything must come from the node
    auto get = Ipfly({"get", c.cid, "-o", dir / ("out-" + c.name), "--store", store.path(),
                      "--source", c.source});
    ASSERT_EQ(get.exit_code, 0) << get.err;
    EXPECT_TRUE(ReadFile(dir / ("out-" + c.name)) == content) << "get mismatch";
    for (int i = 0; i < 8; ++i) {
      TempDir s2;
      uint64_t off = rng() % size;
      uint64_t len = 1 + rng() % (2 * 1024 * 1024);
      if (i == 0) off = size - 1;  // last byte
      auto cat = Ipfly({"cat", c.cid, "--offset", std::to_string(off), "--length",
                        std::to_string(len), "--store", s2.path(), "--source", c.source});
      ASSERT_EQ(cat.exit_code, 0) << cat.err;
      EXPECT_TRUE(cat.out == content.substr(off, len))
          << "range " << off << "+" << len << " got " << cat.out.size() << " bytes";
    }
  }
}

// `ipfly add --to kubo=URL` content is readable by the node itself.
TEST(IpfsNode, AddToKuboIsReadableByNode) {
  TempDir dir, store;
  std::string f = dir / "up";
  WriteRandomFile(f, 3 * kChunk + 77, 11);
  auto add = Ipfly({"add", "-q", "--store", store.path(), "--to", "kubo=" + Nodes().rpc_url, f});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  std::string cid = Trim(add.out);
  auto cat = RunCmd({"curl", "-sS", "-m", "60", "-X", "POST",
                     Nodes().rpc_url + "/api/v0/cat?arg=" + cid + "&timeout=20s"});
  ASSERT_EQ(cat.exit_code, 0) << cat.err;
  EXPECT_TRUE(cat.out == ReadFile(f));
}

// CAR export from ipfly imports into the node; the node's CAR export imports into ipfly.
TEST(IpfsNode, CarBothWays) {
  TempDir dir, store;
  std::string f = dir / "c";
  WriteRandomFile(f, 5 * kChunk + 3, 13);
  auto add = Ipfly({"add", "-q", "--store", store.path(), f});
  ASSERT_EQ(add.exit_code, 0) << add.err;
  std::string cid = Trim(add.out);
  auto exp = Ipfly({"car", "export", cid, "-o", dir / "x.car", "--store", store.path()});
  ASSERT_EQ(exp.exit_code, 0) << exp.err;
  auto imp = RunCmd({"curl", "-sS", "-m", "60", "-X", "POST", "-F", "file=@" + dir / "x.car",
                     Nodes().rpc_url + "/api/v0/dag/import"});
  ASSERT_EQ(imp.exit_code, 0) << imp.err;
  EXPECT_NE(imp.out.find(cid), std::string::npos) << imp.out;
  auto cat = RunCmd({"curl", "-sS", "-m", "60", "-X", "POST",
                     Nodes().rpc_url + "/api/v0/cat?arg=" + cid + "&timeout=20s"});
  EXPECT_TRUE(cat.out == ReadFile(f));

  // The other way: a node-made DAG (CIDv0, dag-pb leaves) exported as CAR, imported by ipfly.
  std::string g = dir / "g";
  WriteRandomFile(g, 4 * kChunk + 9, 17);
  std::string v0 = JsIpfsAdd(g, "");
  auto dexp = RunCmd({"curl", "-sS", "-m", "60", "-X", "POST", "-o", dir / "n.car",
                      Nodes().rpc_url + "/api/v0/dag/export?arg=" + v0});
  ASSERT_EQ(dexp.exit_code, 0) << dexp.err;
  TempDir store2;
  auto cimp = Ipfly({"car", "import", dir / "n.car", "--store", store2.path()});
  ASSERT_EQ(cimp.exit_code, 0) << cimp.err;
  auto back = Ipfly({"cat", v0, "--store", store2.path()});  // no sources: store only
  ASSERT_EQ(back.exit_code, 0) << back.err;
  EXPECT_TRUE(back.out == ReadFile(g));
}

// Unknown content with no sources fails fast with a clear error and a non-zero exit.
TEST(IpfsNode, MissingContentFailsClearly) {
  TempDir store;
  auto r = Ipfly({"cat", "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4", "--store",
                  store.path(), "--source", "gateway=" + Nodes().gateway_url, "--timeout", "5s"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"),
            std::string::npos)
      << r.err;
  auto bad = Ipfly({"cat", "not-a-cid", "--store", store.path()});
  EXPECT_EQ(bad.exit_code, 2) << bad.err;
  EXPECT_NE(bad.err.find("not-a-cid"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace ipfly::testing
