#include "registry_shim/tests/ipfs/harness.h"

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

namespace ipfly::registry::test {
namespace {

std::string g_rpc;

// js-ipfs for the whole binary; missing node kits are a hard failure (run scripts/setup.sh).
class JsIpfsEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    Start();
    if (::testing::Test::HasFailure()) {
      TearDown();
      std::fprintf(stderr, "FATAL: the js-ipfs test node could not be started (see above)\n");
      std::_Exit(1);
    }
  }
  void Start() {
    const std::string src = IPFLY_SOURCE_DIR;
    ASSERT_TRUE(std::filesystem::exists(src + "/tests/ipfs-node/node_modules/.bin/jsipfs"))
        << "tests/ipfs-node/node_modules is missing: run scripts/setup.sh";
    int api = FreePort(), gw = FreePort();
    auto r = RunCmd({src + "/tests/ipfs-node/start-jsipfs.sh", dir_ / "jsipfs", std::to_string(api),
                     std::to_string(gw)},
                    std::chrono::seconds(90));
    ASSERT_EQ(r.exit_code, 0) << "js-ipfs did not start: " << r.err;
    pid_ = std::stoi(r.out);
    g_rpc = "http://127.0.0.1:" + std::to_string(api);
  }
  void TearDown() override {
    if (pid_ > 0) StopPid(pid_);
    pid_ = -1;
  }

 private:
  TempDir dir_;
  pid_t pid_ = -1;
};

[[maybe_unused]] auto* const kEnv = ::testing::AddGlobalTestEnvironment(new JsIpfsEnvironment);

}  // namespace

const std::string& NodeRpc() { return g_rpc; }

TestImage MakeImage(const std::string& description, std::vector<std::string> layers) {
  using json = nlohmann::json;
  TestImage img;
  img.layers = std::move(layers);
  json cfg = {{"architecture", "amd64"},
              {"os", "linux"},
              {"config", {{"Labels", {{"org.opencontainers.image.description", description}}}}},
              {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}}};
  for (const auto& l : img.layers) cfg["rootfs"]["diff_ids"].push_back(DigestOf(l));
  img.config = cfg.dump();
  json m = {{"schemaVersion", 2},
            {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
            {"config",
             {{"mediaType", "application/vnd.oci.image.config.v1+json"},
              {"digest", DigestOf(img.config)},
              {"size", img.config.size()}}},
            {"layers", json::array()}};
  for (const auto& l : img.layers) {
    m["layers"].push_back({{"mediaType", "application/vnd.oci.image.layer.v1.tar"},
                           {"digest", DigestOf(l)},
                           {"size", l.size()}});
  }
  img.manifest = m.dump();
  img.manifest_digest = DigestOf(img.manifest);
  return img;
}

void PushImage(httplib::Client& c, const std::string& repo, const std::string& tag,
               const TestImage& img) {
  PushBlob(c, repo, img.config);
  for (const auto& l : img.layers) PushBlob(c, repo, l);
  auto r = c.Put(("/v2/" + repo + "/manifests/" + tag).c_str(), img.manifest,
                 "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(St(r), 201) << Body(r);
}

}  // namespace ipfly::registry::test
