// registry_ipfs_tests harness: one offline js-ipfs node for the whole binary (started with
// tests/ipfs-node/start-jsipfs.sh on free loopback ports, stopped by PID), ipfly-registry
// processes, the ipfly CLI, and small HTTP helpers.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <memory>
#include <string>
#include <vector>

#include "core/base/digest.h"
#include "core/base/sha256.h"
#include "tests/support/process.h"

namespace ipfly::registry::ipfstest {

using ipfly::testing::FreePort;
using ipfly::testing::ReadFile;
using ipfly::testing::RunCmd;
using ipfly::testing::Spawn;
using ipfly::testing::StopPid;
using ipfly::testing::TempDir;
using ipfly::testing::WaitFor;

// RPC URL of the js-ipfs node (valid inside tests).
const std::string& NodeRpc();

inline std::string DigestOf(const std::string& s) {
  return Digest::FromSha256(Sha256Of(AsBytes(s))).ToString();
}

inline std::string RandomBytes(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[i] = static_cast<char>(x & 0xff);
  }
  return s;
}

inline int St(const httplib::Result& r) { return r ? r->status : -1; }
inline std::string Body(const httplib::Result& r) { return r ? r->body : std::string(); }

// One ipfly-registry process on a free loopback port.
class Registry {
 public:
  explicit Registry(std::string root = "") : root_(root.empty() ? dir_ / "root" : root) {}
  ~Registry() { Stop(); }

  void Start(std::vector<std::string> extra = {}) {
    port_ = FreePort();
    std::vector<std::string> argv = {IPFLY_REGISTRY_BIN,
                                     "--listen",
                                     "127.0.0.1:" + std::to_string(port_),
                                     "--root",
                                     root_,
                                     "--exit-with-parent",
                                     "--log-level",
                                     getenv("REG_TEST_LOG") ? getenv("REG_TEST_LOG") : "warn"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    pid_ = Spawn(argv, dir_ / "registry.log");
    ASSERT_GT(pid_, 0);
    bool up = WaitFor(
        [&] {
          httplib::Client c("127.0.0.1", port_);
          int st = St(c.Get("/v2/"));
          return st == 200 || st == 401;  // 401: push auth configured
        },
        std::chrono::seconds(10));
    ASSERT_TRUE(up) << log();
  }
  void Stop() {
    if (pid_ > 0) StopPid(pid_);
    pid_ = -1;
  }
  // SIGTERM and wait; returns the exit status (-1 if it had to be killed).
  int Terminate(std::chrono::seconds limit) {
    ::kill(pid_, SIGTERM);
    int status = 0;
    bool done = WaitFor([&] { return ::waitpid(pid_, &status, WNOHANG) == pid_; },
                        std::chrono::duration_cast<std::chrono::milliseconds>(limit));
    if (!done) {
      StopPid(pid_);
      pid_ = -1;
      return -1;
    }
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  int port() const { return port_; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string url() const { return "http://" + host(); }
  const std::string& root() const { return root_; }
  std::string log() const { return ReadFile(dir_ / "registry.log"); }
  std::unique_ptr<httplib::Client> Client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", port_);
    c->set_read_timeout(60, 0);
    c->set_write_timeout(60, 0);
    return c;
  }
  // Value of an unlabelled metric (-1 if absent).
  double Metric(const std::string& name) const {
    auto r = Client()->Get("/metrics");
    std::string body = Body(r);
    size_t pos = 0;
    while ((pos = body.find(name + " ", pos)) != std::string::npos) {
      if (pos == 0 || body[pos - 1] == '\n') return std::stod(body.substr(pos + name.size() + 1));
      pos += name.size();
    }
    return -1;
  }

 private:
  TempDir dir_;
  std::string root_;
  int port_ = 0;
  pid_t pid_ = -1;
};

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

}  // namespace ipfly::registry::ipfstest
