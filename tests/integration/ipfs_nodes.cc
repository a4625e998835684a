#include "tests/integration/ipfs_nodes.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace ipfly::testing {
namespace {

IpfsNodes g_nodes;

class NodesEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    Start();
    // gtest reports a failed environment set-up as skipped tests: fail the binary instead.
    if (::testing::Test::HasFailure()) {
      TearDown();
      std::fprintf(stderr, "FATAL: the IPFS test nodes could not be started (see above)\n");
      std::_Exit(1);
    }
  }
  void Start() {
    const std::string src = IPFLY_SOURCE_DIR;
    for (auto kit : {"/tests/ipfs-node/node_modules/.bin/jsipfs",
                     "/tests/trustless-gateway/node_modules/helia"}) {
      ASSERT_TRUE(std::filesystem::exists(src + kit))
          << src + kit << " is missing: run scripts/setup.sh (the IPFS test nodes are required)";
    }
    int api = FreePort(), gw = FreePort(), helia = FreePort();
    auto r = RunCmd({src + "/tests/ipfs-node/start-jsipfs.sh", dir_.path() + "/jsipfs",
                     std::to_string(api), std::to_string(gw)},
                    std::chrono::seconds(90));
    ASSERT_EQ(r.exit_code, 0) << "js-ipfs did not start: " << r.err;
    g_nodes.jsipfs_pid = std::stoi(r.out);
    g_nodes.rpc_url = "http://127.0.0.1:" + std::to_string(api);
    auto h = RunCmd({src + "/tests/trustless-gateway/start-helia-gateway.sh",
                     dir_.path() + "/helia", std::to_string(helia)},
                    std::chrono::seconds(150));
    ASSERT_EQ(h.exit_code, 0) << "Helia gateway did not start: " << h.err;
    g_nodes.helia_pid = std::stoi(h.out);
    g_nodes.gateway_url = "http://127.0.0.1:" + std::to_string(helia);
  }
  void TearDown() override {
    StopPid(g_nodes.jsipfs_pid);
    StopPid(g_nodes.helia_pid);
  }

 private:
  TempDir dir_;
};

std::string HashFromReply(const CommandResult& r) {
  if (r.exit_code != 0) {
    ADD_FAILURE() << "add failed: " << r.err << r.out;
    return "";
  }
  // NDJSON; the last object is the root.
  std::string last;
  size_t pos = 0;
  while (pos < r.out.size()) {
    size_t nl = r.out.find('\n', pos);
    std::string line = r.out.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    if (!line.empty()) last = line;
    if (nl == std::string::npos) break;
    pos = nl + 1;
  }
  auto j = nlohmann::json::parse(last, nullptr, false);
  if (j.is_discarded() || !j.contains("Hash")) {
    ADD_FAILURE() << "unexpected add reply: " << r.out;
    return "";
  }
  return j["Hash"].get<std::string>();
}

}  // namespace

const IpfsNodes& Nodes() { return g_nodes; }

std::string IpflyBin() { return std::string(IPFLY_BINARY_DIR) + "/cli/ipfly"; }

std::string JsIpfsAdd(const std::string& path, const std::string& params) {
  return HashFromReply(
      RunCmd({"curl", "-sS", "-m", "300", "-X", "POST", "-F", "file=@" + path,
              Nodes().rpc_url + "/api/v0/add?" + params +
                  (params.find("cid-version=1") != std::string::npos ? "&cid-base=base32" : "")}));
}

std::string HeliaAdd(const std::string& path, const std::string& params) {
  return HashFromReply(RunCmd({"curl", "-sS", "-m", "300", "-X", "POST", "--data-binary",
                               "@" + path, Nodes().gateway_url + "/api/v0/add?" + params}));
}

[[maybe_unused]] static auto* const kEnv =
    ::testing::AddGlobalTestEnvironment(new NodesEnvironment);

}  // namespace ipfly::testing
