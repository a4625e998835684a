// Result/Error, Digest, Config, ThreadPool, sha256, UniqueFd.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>

#include "core/base/config.h"
#include "core/base/digest.h"
#include "core/base/fd.h"
#include "core/base/result.h"
#include "core/base/sha256.h"
#include "core/base/thread_pool.h"

namespace ipfly {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument(std::to_string(x) + " is odd");
  return x / 2;
}

Result<int> Quarter(int x) {
  int h = IPFLY_TRY(Half(x));
  return IPFLY_TRY(Half(h));
}

TEST(Result, TryPropagatesErrors) {
  EXPECT_EQ(*Quarter(8), 2);
  auto r = Quarter(6);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "3 is odd");
  EXPECT_EQ(r.error().With("ctx").ToString(), "invalid argument: ctx: 3 is odd");
}

TEST(Sha256, KnownVectorsAndIncremental) {
  auto h = Sha256Of(AsBytes("abc"));
  EXPECT_EQ(HexEncode(ByteView(h.data(), h.size())),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 s;
  s.Update(AsBytes("a"));
  s.Update(AsBytes("bc"));
  EXPECT_EQ(s.Final(), h);
  s.Update(AsBytes("abc"));  // reusable after Final
  EXPECT_EQ(s.Final(), h);
}

TEST(Digest, ParsesAndRejects) {
  auto h = Sha256Of(AsBytes("abc"));
  auto d = Digest::FromSha256(h);
  EXPECT_EQ(d.ToString(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  auto p = Digest::Parse(d.ToString());
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(*p, d);
  EXPECT_FALSE(
      Digest::Parse("sha256:BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD")
          .ok());
  EXPECT_FALSE(Digest::Parse("sha256:abc").ok());
  EXPECT_FALSE(Digest::Parse("ba7816bf").ok());
  EXPECT_EQ(Digest::Parse("md5:" + std::string(32, 'a')).error().code(), Errc::kUnsupported);
}

TEST(Config, ParsesEveryKeyAndRejectsUnknown) {
  auto c = Config::Parse(R"(
[store]
dir = "/tmp/s"
[cache]
dir = "/tmp/c"
max_size = "512MiB"
[import]
profile = "kubo-v0"
[fetch]
timeout_ms = 5000
max_inflight = 4
hedge_ms = 150
[[source]]
kind = "gateway"
url = "http://127.0.0.1:8080/"
[[source]]
kind = "kubo"
url = "http://127.0.0.1:5001"
)");
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->store_dir, "/tmp/s");
  EXPECT_EQ(c->cache_dir, "/tmp/c");
  EXPECT_EQ(c->cache_max_bytes, 512ull << 20);
  EXPECT_EQ(c->profile, "kubo-v0");
  EXPECT_EQ(c->fetch.timeout_ms, 5000u);
  EXPECT_EQ(c->fetch.max_inflight, 4u);
  EXPECT_EQ(c->fetch.hedge_ms, 150u);
  ASSERT_EQ(c->sources.size(), 2u);
  EXPECT_EQ(c->sources[0].url, "http://127.0.0.1:8080");
  EXPECT_EQ(c->sources[1].kind, SourceSpec::Kind::kKubo);

  auto bad = Config::Parse("[fetch]\ntimeout = 3\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("timeout"), std::string::npos);
  auto syntax = Config::Parse("[fetch\n", "x.toml");
  ASSERT_FALSE(syntax.ok());
  EXPECT_NE(syntax.error().message().find("x.toml:1"), std::string::npos);
  EXPECT_FALSE(Config::Parse("[[source]]\nkind = \"ftp\"\nurl = \"http://x:1\"\n").ok());
}

TEST(Config, SnapshotterAndRegistrySections) {
  auto c = Config::Parse(R"(
[snapshotter]
socket = "/tmp/s.sock"
resolver = "http://127.0.0.1:5000"
min_lazy_size = "1MiB"
background_fetch = true
fuse_timeout_s = 5
[registry]
listen = "127.0.0.1:5999"
read_only = true
max_upload_size = "1GiB"
tag_ttl_s = 10
)");
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->snapshotter.socket, "/tmp/s.sock");
  EXPECT_EQ(c->snapshotter.resolver, "http://127.0.0.1:5000");
  EXPECT_EQ(c->snapshotter.min_lazy_size, 1u << 20);
  EXPECT_TRUE(c->snapshotter.background_fetch);
  EXPECT_DOUBLE_EQ(c->snapshotter.fuse_timeout_s, 5.0);
  EXPECT_EQ(c->registry.listen, "127.0.0.1:5999");
  EXPECT_TRUE(c->registry.read_only);
  EXPECT_EQ(c->registry.max_upload_size, 1ull << 30);
  EXPECT_EQ(c->registry.tag_ttl_s, 10u);
  auto bad = Config::Parse("[snapshotter]\nbackground_fetch = \"yes\"\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("background_fetch"), std::string::npos);
  EXPECT_FALSE(Config::Parse("[registry]\nlisten_addr = \"x\"\n").ok());
  // The shipped example must parse.
  auto example = Config::Load(std::string(IPFLY_SOURCE_DIR) + "/packaging/config.example.toml");
  EXPECT_TRUE(example.ok()) << example.error().ToString();
}

TEST(Config, SpanCacheCapAndPowergate) {
  EXPECT_EQ(Config::Defaults().snapshotter.span_cache_max_bytes, 20ull << 30);
  EXPECT_TRUE(Config::Defaults().powergate.address.empty());
  auto c = Config::Parse(R"(
[snapshotter]
span_cache_max_size = "64MiB"
[powergate]
address = "127.0.0.1:5002"
token_env = "PG_TOKEN"
ipfs_proxy = "http://127.0.0.1:6002"
unfreeze_max_price = 1000000
job_poll_ms = 50
state_dir = "/tmp/pg"
)");
  ASSERT_TRUE(c.ok()) << c.error().ToString();
  EXPECT_EQ(c->snapshotter.span_cache_max_bytes, 64ull << 20);
  EXPECT_EQ(c->powergate.address, "127.0.0.1:5002");
  EXPECT_EQ(c->powergate.token_env, "PG_TOKEN");
  EXPECT_EQ(c->powergate.ipfs_proxy, "http://127.0.0.1:6002");
  EXPECT_EQ(c->powergate.unfreeze_max_price, 1000000u);
  EXPECT_EQ(c->powergate.job_poll_ms, 50u);
  EXPECT_EQ(c->powergate.state_dir, "/tmp/pg");
  EXPECT_FALSE(c->powergate.tls);
  auto bad = Config::Parse("[powergate]\ntokn = \"x\"\n");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error().message().find("tokn"), std::string::npos);
  EXPECT_FALSE(Config::Parse("[powergate]\njob_poll_ms = 0\n").ok());
}

TEST(Config, SourceSpecAndSizes) {
  EXPECT_TRUE(SourceSpec::Parse("gateway=http://127.0.0.1:1").ok());
  EXPECT_FALSE(SourceSpec::Parse("gateway").ok());
  EXPECT_FALSE(SourceSpec::Parse("kubo=ftp://x").ok());
  EXPECT_EQ(*ParseByteSize("4k"), 4096u);
  EXPECT_EQ(*ParseByteSize("10GiB"), 10ull << 30);
  EXPECT_FALSE(ParseByteSize("ten").ok());
  EXPECT_FALSE(ParseByteSize("99999999999999999999").ok());
}

TEST(ThreadPool, RunsAllTasksAndJoins) {
  std::atomic<int> n{0};
  {
    ThreadPool pool(4);
    std::vector<std::future<int>> fs;
    for (int i = 0; i < 100; ++i)
      fs.push_back(pool.Submit([&n, i] {
        ++n;
        return i;
      }));
    for (int i = 0; i < 100; ++i) EXPECT_EQ(fs[i].get(), i);
    for (int i = 0; i < 50; ++i) pool.Post([&n] { ++n; });
  }  // destructor drains the queue
  EXPECT_EQ(n.load(), 150);
}

// True while `fd` names an open file description of this process.
bool IsOpen(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

TEST(UniqueFd, ClosesOnScopeExit) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  {
    UniqueFd fd(raw);
    EXPECT_TRUE(fd.valid());
    EXPECT_EQ(fd.get(), raw);
    EXPECT_TRUE(IsOpen(raw));
  }
  EXPECT_FALSE(IsOpen(raw));
}

TEST(UniqueFd, EmptyAndFailedOpenHoldNothing) {
  UniqueFd none;
  EXPECT_FALSE(none.valid());
  EXPECT_EQ(none.get(), -1);
  EXPECT_EQ(none.Close(), 0);
  errno = 0;
  UniqueFd failed(::open("/nonexistent/ipfly-fd-test", O_RDONLY | O_CLOEXEC));
  EXPECT_EQ(errno, ENOENT);  // kept for the caller's error message
  EXPECT_FALSE(failed.valid());
}

TEST(UniqueFd, MoveTransfersOwnership) {
  int raw = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw, 0);
  UniqueFd a(raw);
  UniqueFd b(std::move(a));
  EXPECT_EQ(a.get(), -1);  // NOLINT(bugprone-use-after-move): moved-from state is specified
  EXPECT_EQ(b.get(), raw);
  UniqueFd c;
  c = std::move(b);
  EXPECT_EQ(c.get(), raw);
  EXPECT_TRUE(IsOpen(raw));
  c = UniqueFd();  // move-assigning closes the old fd
  EXPECT_FALSE(IsOpen(raw));
}

TEST(UniqueFd, ReleaseResetAndClose) {
  int raw1 = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int raw2 = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  ASSERT_GE(raw1, 0);
  ASSERT_GE(raw2, 0);
  UniqueFd fd(raw1);
  fd.Reset(raw2);  // closes raw1
  EXPECT_FALSE(IsOpen(raw1));
  EXPECT_EQ(fd.get(), raw2);
  int released = fd.Release();
  EXPECT_EQ(released, raw2);
  EXPECT_FALSE(fd.valid());
  EXPECT_TRUE(IsOpen(raw2));  // Release does not close
  fd.Reset(released);
  EXPECT_EQ(fd.Close(), 0);
  EXPECT_FALSE(fd.valid());
  EXPECT_FALSE(IsOpen(raw2));
}

}  // namespace
}  // namespace ipfly
