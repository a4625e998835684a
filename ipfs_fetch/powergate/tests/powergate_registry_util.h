// Helpers of the Powergate + ipfly-registry tests (powergate_registry_*_test.cc): a real
// ipfly-registry process (registry_shim/tests/registry_harness.h) with the busybox test image
// pushed by skopeo, and the fake Powergate.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "core/base/log.h"
#include "registry_shim/tests/registry_harness.h"
#include "tests/support/fake_powergate.h"

namespace ipfly::registry::test {

namespace fs = std::filesystem;
using json = nlohmann::json;
using ipfly::testing::FakePowergate;
using std::chrono::milliseconds;
using std::chrono::seconds;

inline constexpr const char* kOciManifest = "application/vnd.oci.image.manifest.v1+json";

// The 2-layer busybox OCI archive pushed to `host`/`ref` with skopeo.
inline void PushBusybox(const TempDir& tmp, const std::string& host, const std::string& ref) {
  auto mk = RunCmd(
      {std::string(IPFLY_SOURCE_DIR) + "/registry_shim/tests/make-busybox-image", tmp / "bb.tar"},
      seconds(120));
  ASSERT_EQ(mk.exit_code, 0) << mk.out << mk.err;
  auto cp = RunCmd({"skopeo", "copy", "--dest-tls-verify=false", "oci-archive:" + tmp / "bb.tar",
                    "docker://" + host + "/" + ref},
                   seconds(120));
  ASSERT_EQ(cp.exit_code, 0) << cp.out << cp.err;
}

// One blob of the image as the registry's resolver knows it.
struct BlobRef {
  std::string digest, cid, index_cid;
};

// The config blob (first) and the layers (in order) of `repo`:`tag`.
inline std::vector<BlobRef> ImageBlobs(const Registry& reg, const std::string& repo,
                                       const std::string& tag) {
  auto c = reg.Client();
  auto m = c->Get("/v2/" + repo + "/manifests/" + tag, {{"Accept", kOciManifest}});
  EXPECT_EQ(St(m), 200) << Body(m);
  json doc = json::parse(Body(m), nullptr, false);
  std::vector<std::string> digests;
  if (doc.is_object() && doc.contains("config")) {
    digests.push_back(doc["config"].value("digest", ""));
    for (const auto& l : doc["layers"]) digests.push_back(l.value("digest", ""));
  }
  std::vector<BlobRef> out;
  for (const auto& d : digests) {
    auto r = c->Get("/ipfly/v1/layers/" + d);
    EXPECT_EQ(St(r), 200) << d;
    json j = json::parse(Body(r), nullptr, false);
    if (!j.is_object()) continue;
    out.push_back({d, j.value("cid", ""), j.value("index_cid", "")});
  }
  return out;
}

inline std::string PowergateToml(const FakePowergate& pg) {
  return "[powergate]\naddress = \"" + pg.address() +
         "\"\ntoken = \"test-token\"\nunfreeze_max_price = 1000\njob_poll_ms = 50\n";
}

}  // namespace ipfly::registry::test
