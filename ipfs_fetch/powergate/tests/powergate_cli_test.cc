// `ipfly archive`, `ipfly archive status`, `ipfly thaw` and `ipfly cat` (the binary) against the
// fake Powergate: what a person types, with the exit codes and messages they see.
#include <gtest/gtest.h>
#include <httplib.h>

#include <fstream>
#include <thread>

#include "core/base/log.h"
#include "tests/support/fake_powergate.h"
#include "tests/support/process.h"

namespace ipfly {
namespace {

using testing::FakePowergate;
using testing::RunCmd;
using testing::TempDir;

class PowergateCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitLogging("warn");
    testing::FakePowergateOptions o;
    o.thaw_time = std::chrono::milliseconds(400);
    auto pg = FakePowergate::Start(o);
    ASSERT_TRUE(pg.ok()) << pg.error().ToString();
    pg_ = std::move(*pg);
    config_ = tmp_ / "config.toml";
    std::ofstream(config_) << "[store]\ndir = \"" << tmp_ / "store"
                           << "\"\n"
                           << "[powergate]\naddress = \"" << pg_->address() << "\"\n"
                           << "token = \"test-token\"\nunfreeze_max_price = 5000\n"
                           << "job_poll_ms = 50\n";
  }
  testing::CommandResult Ipfly(std::vector<std::string> args) {
    args.insert(args.begin(), IPFLY_CLI);
    args.push_back("--config");
    args.push_back(config_);
    return RunCmd(args, std::chrono::seconds(60));
  }
  TempDir tmp_;
  std::unique_ptr<FakePowergate> pg_;
  std::string config_;
};

TEST_F(PowergateCliTest, ArchiveThawStatusAndRead) {
  std::string data(700'000, '\0');
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 + i / 977);
  // Known to "the IPFS network" (stageable) but not stored in Powergate yet.
  auto cid = pg_->AddObject(AsBytes(data), false, false);
  ASSERT_TRUE(cid.ok());
  const std::string c = cid->ToString();

  auto r = Ipfly({"archive", c, "--wait"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("archive " + c + ": job job-1"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("job job-1 (" + c + "): SUCCESS"), std::string::npos) << r.out;
  EXPECT_EQ(pg_->counters().stage_cid, 1u);
  EXPECT_FALSE(pg_->IsHot(*cid)) << "archived cold only";

  r = Ipfly({"archive", "status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("hot:  disabled"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cold: enabled (Filecoin), 1 deal(s)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("archive job job-1: SUCCESS"), std::string::npos) << r.out;

  // A read now fails fast, naming the thaw job it started (held until completed below).
  pg_->SetThawMode(FakePowergate::ThawMode::kHold);
  r = Ipfly({"cat", c, "--timeout", "3s"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is being retrieved from Filecoin, job job-2"), std::string::npos) << r.err;

  // `ipfly thaw` follows the same job (recorded in state_dir) instead of paying twice.
  std::thread finisher([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    EXPECT_TRUE(pg_->CompleteJob("job-2").ok());
  });
  r = Ipfly({"thaw", c, "--wait"});
  finisher.join();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("thaw " + c + ": job job-2"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("SUCCESS"), std::string::npos) << r.out;
  EXPECT_EQ(pg_->counters().thaws, 1u);

  r = Ipfly({"cat", c});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, data);

  r = Ipfly({"thaw", c});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("already in hot storage"), std::string::npos) << r.out;

  // `ipfly status` lists the cold retrievals: live from the snapshotter's /metrics when it
  // reports them, else from the local state_dir. A minimal stand-in serves the snapshotter's
  // /status and /metrics documents here.
  std::string metrics;
  httplib::Server snap;
  snap.Get("/status", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"snapshots":[],"fallbacks":{},"lazy_enabled":true,"lazy_mounts":0})",
                    "application/json");
  });
  snap.Get("/metrics", [&](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics, "text/plain");
  });
  int port = snap.bind_to_any_port("127.0.0.1");
  ASSERT_GT(port, 0);
  std::thread serving([&] { snap.listen_after_bind(); });
  const std::string at = "127.0.0.1:" + std::to_string(port);
  r = Ipfly({"status", "--snapshotter", at});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("cold retrievals (Powergate " + pg_->address()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 in flight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(c), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("job-2"), std::string::npos) << r.out;
  metrics = "ipfly_powergate_thaw_job{cid=\"bafyX\",job_id=\"job-9\",state=\"EXECUTING\"} 1\n";
  r = Ipfly({"status", "--snapshotter", at});
  EXPECT_NE(r.out.find("from snapshotter): 1 in flight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("job-9"), std::string::npos) << r.out;
  snap.stop();
  serving.join();
}

TEST_F(PowergateCliTest, ClearErrors) {
  auto r = Ipfly({"archive", "not-a-cid"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("neither a CID nor an image"), std::string::npos) << r.err;
  r = Ipfly({"archive", "status", "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("not found"), std::string::npos) << r.out;
  // An image reference with no registry listening: a clear transport error, exit 1.
  r = Ipfly({"archive", "library/alpine:3", "--registry",
             "127.0.0.1:" + std::to_string(testing::FreePort())});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("resolving image library/alpine:3"), std::string::npos) << r.err;
  // A wrong token is reported as such, never echoed.
  std::ofstream(config_, std::ios::app) << "";
  std::string bad = tmp_ / "bad.toml";
  std::ofstream(bad) << "[store]\ndir = \"" << tmp_ / "store"
                     << "\"\n[powergate]\naddress = \"" << pg_->address()
                     << "\"\ntoken = \"sekrit-wrong\"\n";
  r = RunCmd({IPFLY_CLI, "archive", "status", "--config", bad,
              "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("permission denied"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("sekrit-wrong"), std::string::npos);
  EXPECT_EQ(r.err.find("sekrit-wrong"), std::string::npos);
}

}  // namespace
}  // namespace ipfly
