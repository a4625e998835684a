// Shared by registry_tests and registry_ipfs_tests (both in namespace ipfly::registry::test): an
// ipfly-registry process on a free loopback port (IPFLY_REGISTRY_BIN, stopped by PID), and small
// HTTP and data helpers.
#pragma once

#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "core/base/digest.h"
#include "core/base/sha256.h"
#include "tests/support/process.h"

#ifndef IPFLY_REGISTRY_BIN
#error "IPFLY_REGISTRY_BIN must name the ipfly-registry binary under test"
#endif

namespace ipfly::registry::test {

// The process helpers every registry test uses.
using ipfly::testing::CommandResult;
using ipfly::testing::FreePort;
using ipfly::testing::ReadFile;
using ipfly::testing::RunCmd;
using ipfly::testing::Sh;
using ipfly::testing::Spawn;
using ipfly::testing::StopPid;
using ipfly::testing::TempDir;
using ipfly::testing::WaitFor;

// "sha256:<hex>" of `s`.
inline std::string DigestOf(const std::string& s) {
  return Digest::FromSha256(Sha256Of(AsBytes(s))).ToString();
}

// `n` deterministic pseudo-random bytes (xorshift64 seeded by `seed`).
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

// Status and body of a response, or -1 / "" when there was none (the failure shows up as an
// assertion on the value instead of a crash).
inline int St(const httplib::Result& r) { return r ? r->status : -1; }
inline std::string Body(const httplib::Result& r) { return r ? r->body : std::string(); }

// One ipfly-registry process on a free loopback port, with its log in a temp dir. The destructor
// stops it (by PID). `root` defaults to a fresh directory inside the temp dir.
class Registry {
 public:
  explicit Registry(std::string root = "") : root_(root.empty() ? dir_ / "root" : root) {}
  ~Registry() { Stop(); }
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Starts the registry with `extra` arguments and waits (10 s) until /v2/ answers 200 or 401
  // (401: push auth configured). Fails the test (with the log) otherwise.
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
          return st == 200 || st == 401;
        },
        std::chrono::seconds(10));
    ASSERT_TRUE(up) << log();
  }
  void Stop() {
    if (pid_ > 0) StopPid(pid_);
    pid_ = -1;
  }
  // SIGKILL and reap.
  void Kill9() {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
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
  pid_t pid() const { return pid_; }
  void Forget() { pid_ = -1; }  // the caller reaped the process
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string url() const { return "http://" + host(); }
  const std::string& root() const { return root_; }
  std::string log() const { return ReadFile(dir_ / "registry.log"); }
  // A client with 60 s read and write timeouts.
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

}  // namespace ipfly::registry::test
