// The Fetcher's WARN for a source failure that is not a miss/transient error (e.g. Powergate with
// thaws disabled: kFailedPrecondition) is rate-limited per (read root, source, error kind): the
// first occurrence is logged, the repeats of every FUSE read are not (within 60 s).
#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>

#include <atomic>
#include <sstream>

#include "core/base/log.h"
#include "core/block.h"
#include "ipfs_fetch/fetcher.h"

namespace ipfly::fetch {
namespace {

class ThawsDisabledSource : public BlockSource {
 public:
  std::string name() const override { return "powergate test"; }
  Result<Block> Get(const mf::Cid& cid, Deadline) override {
    ++calls;
    return Error(Errc::kFailedPrecondition,
                 cid.ToString() + " is only in Filecoin cold storage and thaws are disabled");
  }
  std::atomic<int> calls{0};
};

mf::Cid CidOf(const std::string& s) {
  auto b = Block::Make(0x55, Bytes(s.begin(), s.end()));
  EXPECT_TRUE(b.ok());
  return b->cid();
}

size_t Count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

TEST(PowergateFetcherLog, FailedPreconditionWarnIsRateLimitedPerRoot) {
  InitLogging("warn");
  std::ostringstream out;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out);
  spdlog::default_logger()->sinks().push_back(sink);

  ThawsDisabledSource src;
  FetcherOptions o;
  o.config.retries = 0;
  o.sources = {&src};
  Fetcher fetcher(std::move(o));
  const mf::Cid root_a = CidOf("object a"), root_b = CidOf("object b");
  auto read = [&](const mf::Cid& root, const std::string& block) {
    ReadRootScope scope(root);
    auto r = fetcher.Get(CidOf(block), DeadlineIn(std::chrono::seconds(5)));
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), Errc::kFailedPrecondition) << r.error().ToString();
  };
  for (int i = 0; i < 20; ++i) read(root_a, "block " + std::to_string(i % 3));
  read(root_b, "block x");
  read(root_b, "block y");
  spdlog::default_logger()->flush();
  spdlog::default_logger()->sinks().pop_back();

  const std::string log = out.str();
  EXPECT_EQ(src.calls.load(), 22) << "every read still asks the source";
  EXPECT_EQ(Count(log, "thaws are disabled"), 2u) << log;  // first of a, first of b
  EXPECT_EQ(Count(log, "read of " + root_a.ToString()), 1u) << log;
  EXPECT_EQ(Count(log, "read of " + root_b.ToString()), 1u) << log;
}

}  // namespace
}  // namespace ipfly::fetch
