// registry_ipfs_tests harness: one offline js-ipfs node for the whole binary (started with
// tests/ipfs-node/start-jsipfs.sh on free loopback ports, stopped by PID), ipfly-registry
// processes (registry_shim/tests/registry_harness.h), the ipfly CLI, and small HTTP helpers.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <memory>
#include <string>
#include <vector>

#include "registry_shim/tests/registry_harness.h"
#include "tests/support/process.h"

namespace ipfly::registry::test {

// RPC URL of the js-ipfs node (valid inside tests).
const std::string& NodeRpc();

// Monolithic blob upload; returns the digest.
inline std::string PushBlob(httplib::Client& c, const std::string& repo, const std::string& data) {
  std::string d = DigestOf(data);
  auto r = c.Post("/v2/" + repo + "/blobs/uploads/?digest=" + d, data, "application/octet-stream");
  if (St(r) == 202) {
    // docker-registry ignores a monolithic POST: finish the upload it started with a PUT.
    std::string loc = r->get_header_value("Location");
    if (size_t p = loc.find("://"); p != std::string::npos) loc = loc.substr(loc.find('/', p + 3));
    loc += (loc.find('?') == std::string::npos ? "?digest=" : "&digest=") + d;
    r = c.Put(loc, data, "application/octet-stream");
  }
  EXPECT_EQ(St(r), 201) << Body(r);
  return d;
}

// An OCI image: config + layers + manifest, pushed with PushImage.
struct TestImage {
  std::string config;
  std::vector<std::string> layers;
  std::string manifest;
  std::string manifest_digest;
};

TestImage MakeImage(const std::string& description, std::vector<std::string> layers);
// Pushes blobs then the manifest under repo:tag (expects 201s).
void PushImage(httplib::Client& c, const std::string& repo, const std::string& tag,
               const TestImage& img);

// The ipfly CLI under test.
inline ipfly::testing::CommandResult Ipfly(
    std::vector<std::string> args, std::chrono::seconds timeout = std::chrono::seconds(120)) {
  args.insert(args.begin(), IPFLY_CLI_BIN);
  return RunCmd(args, timeout);
}

inline std::string Trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace ipfly::registry::test
