// Zero-copy replies: ranges a tree holds in a local file (FileTree::ReadLocal) are spliced from
// that file to /dev/fuse; everything else goes through Read. Both must give the file's bytes.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "fusefs/fuse_fs.h"
#include "fusefs/tests/mem_tree.h"
#include "fusefs/tests/test_mount.h"
#include "tests/support/process.h"

namespace ipfly::fusefs {
namespace {

using testing::MemTree;

constexpr uint64_t kSize = 8 << 20;
constexpr uint64_t kSeed = 7;
constexpr uint64_t kLocalEnd = 5 << 20;  // [0, 5 MiB) is "cached" in a local file

// A MemTree whose generated file "big" is also in a local file up to kLocalEnd. The local file
// holds the content at an offset (like a span cache holding a tar stream), so a reply that
// ignored fd_offset would be wrong.
class LocalTree : public MemTree {
 public:
  static constexpr uint64_t kShift = 12345;

  explicit LocalTree(const std::string& path) : MemTree("local") {
    ino_ = AddGeneratedFile("big", kSize, kSeed);
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    std::vector<uint8_t> buf(kLocalEnd);
    FillGenerated(kSeed, 0, buf.data(), buf.size());
    ok_ = fd_ >= 0 &&
          ::pwrite(fd_, buf.data(), buf.size(), kShift) == static_cast<ssize_t>(buf.size());
  }
  ~LocalTree() override {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return ok_; }

  Status ReadLocal(uint64_t ino, uint64_t off, size_t len, const SendLocal& send) override {
    if (fail_) return IoError("local copy unreadable");
    if (ino != ino_ || off >= kSize) return NotFound("not local");
    size_t n = static_cast<size_t>(std::min<uint64_t>(len, kSize - off));
    if (off + n > kLocalEnd) return NotFound("not local");
    ++sends_;
    return send(fd_, off + kShift, n);
  }

  std::atomic<uint64_t> sends_{0};
  std::atomic<bool> fail_{false};

 private:
  uint64_t ino_ = 0;
  int fd_ = -1;
  bool ok_ = false;
};

TEST(FuseSplice, LocalRangesAreSplicedTheRestIsRead) {
  RequireFuse();
  ipfly::testing::TempDir tmp;
  auto tree = std::make_shared<LocalTree>(tmp.path() + "/local.data");
  ASSERT_TRUE(tree->ok());
  TestMount m;
  ASSERT_MOUNTED(m);
  ASSERT_TRUE(m.fs().Attach("t", tree).ok());
  const std::string path = m / "t/big";
  // Several threads read the whole file in odd-sized pieces; every byte must match.
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      int fd = ::open(path.c_str(), O_RDONLY);
      if (fd < 0) return (void)++errors;
      const size_t piece = 100'000 + 77'777 * static_cast<size_t>(t);
      std::vector<uint8_t> got(piece), want(piece);
      for (uint64_t off = 0; off < kSize; off += piece) {
        ssize_t n = ::pread(fd, got.data(), piece, static_cast<off_t>(off));
        const size_t expect = static_cast<size_t>(std::min<uint64_t>(piece, kSize - off));
        if (n != static_cast<ssize_t>(expect)) {
          ++errors;
          break;
        }
        MemTree::FillGenerated(kSeed, off, want.data(), expect);
        if (std::memcmp(got.data(), want.data(), expect) != 0) ++mismatches;
      }
      ::close(fd);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
  EXPECT_GT(tree->sends_.load(), 0u);  // the local part was served from the file
  EXPECT_GT(tree->read_calls(), 0u);   // the rest through Read
}

TEST(FuseSplice, AnErrorOfTheLocalCopyIsEio) {
  RequireFuse();
  ipfly::testing::TempDir tmp;
  auto tree = std::make_shared<LocalTree>(tmp.path() + "/local.data");
  ASSERT_TRUE(tree->ok());
  tree->fail_ = true;
  TestMount m;
  ASSERT_MOUNTED(m);
  ASSERT_TRUE(m.fs().Attach("t", tree).ok());
  int fd = ::open((m / "t/big").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  char buf[4096];
  errno = 0;
  EXPECT_EQ(::pread(fd, buf, sizeof buf, 0), -1);
  EXPECT_EQ(errno, EIO);
  ::close(fd);
}

}  // namespace
}  // namespace ipfly::fusefs
