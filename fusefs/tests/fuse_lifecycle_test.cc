// Mount lifecycle: several trees, Attach/Detach under load, Unmount (idle, external, with a
// blocked reader) and recovery from a crashed server's stale mount.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "fusefs/fuse_fs.h"
#include "fusefs/mount_util.h"
#include "fusefs/tests/mem_tree.h"
#include "fusefs/tests/test_mount.h"

extern char** environ;

namespace ipfly::fusefs {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using std::chrono::steady_clock;
using testing::MemTree;

std::shared_ptr<MemTree> SmallTree(const std::string& name, const std::string& content) {
  auto t = std::make_shared<MemTree>(name);
  t->AddFile("file", content);
  t->AddGeneratedFile("big", 8 << 20, 42);
  t->AddDir("d");
  return t;
}

int StatErrno(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0 ? 0 : errno;
}

TEST(FuseLifecycle, TwoTreesSideBySide) {
  RequireFuse();
  TestMount m;
  ASSERT_MOUNTED(m);
  ASSERT_TRUE(m.fs().Attach("a", SmallTree("a", "content a")).ok());
  ASSERT_TRUE(m.fs().Attach("b", SmallTree("b", "content b")).ok());
  EXPECT_EQ(m.fs().Attached(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(ipfly::testing::ReadFile(m / "a/file"), "content a");
  EXPECT_EQ(ipfly::testing::ReadFile(m / "b/file"), "content b");
  struct stat sa, sb, root;
  ASSERT_EQ(stat((m / "a/file").c_str(), &sa), 0);
  ASSERT_EQ(stat((m / "b/file").c_str(), &sb), 0);
  EXPECT_NE(sa.st_ino, sb.st_ino);  // same tree-local inode, different slots
  EXPECT_EQ(sa.st_ino & ((uint64_t{1} << 40) - 1), sb.st_ino & ((uint64_t{1} << 40) - 1));
  EXPECT_EQ(sa.st_dev, sb.st_dev);
  ASSERT_EQ(stat(m.mnt().c_str(), &root), 0);
  EXPECT_EQ(root.st_nlink, 4u);
  EXPECT_EQ(ipfly::testing::Sh("ls " + m.mnt()).out, "a\nb\n");
}

TEST(FuseLifecycle, AttachValidatesNames) {
  RequireFuse();
  TestMount m;
  ASSERT_MOUNTED(m);
  auto t = SmallTree("t", "x");
  for (const char* bad : {"", ".", "..", "a/b"}) {
    Status s = m.fs().Attach(bad, t);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.error().code(), Errc::kInvalidArgument) << bad;
  }
  ASSERT_TRUE(m.fs().Attach("t", t).ok());
  Status dup = m.fs().Attach("t", t);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), Errc::kAlreadyExists);
  Status missing = m.fs().Detach("nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
}

TEST(FuseLifecycle, DetachDropsTheEntryButOpenFilesKeepWorking) {
  RequireFuse();
  TestMount m;
  ASSERT_MOUNTED(m);
  ASSERT_TRUE(m.fs().Attach("a", SmallTree("a", "old tree")).ok());
  int fd = open((m / "a/file").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(StatErrno(m / "a/d"), 0);  // cached dentries with a one-day timeout

  ASSERT_TRUE(m.fs().Detach("a").ok());
  EXPECT_EQ(StatErrno(m / "a"), ENOENT);
  EXPECT_EQ(StatErrno(m / "a/d"), ENOENT);
  EXPECT_EQ(m.fs().Attached(), std::vector<std::string>{});
  // The open file still reads, and fstat still answers, from the detached tree.
  char buf[16] = {};
  EXPECT_EQ(pread(fd, buf, sizeof buf, 0), 8);
  EXPECT_EQ(std::string(buf, 8), "old tree");
  struct stat st;
  EXPECT_EQ(fstat(fd, &st), 0);
  EXPECT_EQ(st.st_size, 8);
  const ino_t old_ino = st.st_ino;

  // The same name with a new tree shows the new content (new slot, new inodes).
  ASSERT_TRUE(m.fs().Attach("a", SmallTree("a2", "new tree!")).ok());
  EXPECT_EQ(ipfly::testing::ReadFile(m / "a/file"), "new tree!");
  ASSERT_EQ(stat((m / "a/file").c_str(), &st), 0);
  EXPECT_NE(st.st_ino, old_ino);  // slots are never reused
  close(fd);
}

TEST(FuseLifecycle, AttachDetachWhileReading) {
  RequireFuse();
  TestMount m;
  ASSERT_MOUNTED(m);
  auto stable = SmallTree("stable", "stable");
  ASSERT_TRUE(m.fs().Attach("stable", stable).ok());
  ASSERT_TRUE(m.fs().Attach("doomed", SmallTree("doomed", "doomed")).ok());

  std::atomic<bool> stop{false};
  std::atomic<int> errors{0}, reads{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 6; ++t) {
    readers.emplace_back([&, t] {
      // Half the readers keep one fd open on the tree that gets detached below.
      const std::string path = m / (t % 2 ? "doomed/big" : "stable/big");
      int fd = open(path.c_str(), O_RDONLY);
      if (fd < 0) {
        ++errors;
        return;
      }
      std::vector<uint8_t> got(64 << 10), want(64 << 10);
      uint64_t off = static_cast<uint64_t>(t) * 12345;
      while (!stop.load()) {
        off = (off * 2654435761u + 4096) % ((8 << 20) - got.size());
        // O_DIRECT is not used: after the first pass the page cache answers, which is fine;
        // re-opening the stable tree's file exercises lookups during Attach/Detach too.
        if (pread(fd, got.data(), got.size(), static_cast<off_t>(off)) !=
            static_cast<ssize_t>(got.size())) {
          ++errors;
          break;
        }
        MemTree::FillGenerated(42, off, want.data(), want.size());
        if (got != want) ++errors;
        if (t % 2 == 0 && ipfly::testing::ReadFile(m / "stable/file") != "stable") ++errors;
        ++reads;
      }
      close(fd);
    });
  }
  for (int i = 0; i < 300; ++i) {
    const std::string name = "churn" + std::to_string(i % 3);
    ASSERT_TRUE(m.fs().Attach(name, SmallTree(name, name)).ok());
    EXPECT_EQ(ipfly::testing::ReadFile(m / (name + "/file")), name);
    ASSERT_TRUE(m.fs().Detach(name).ok());
    EXPECT_EQ(StatErrno(m / name), ENOENT);
    if (i == 150) {
      ASSERT_TRUE(m.fs().Detach("doomed").ok());
    }
  }
  stop = true;
  for (auto& r : readers) r.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(StatErrno(m / "doomed"), ENOENT);
}

TEST(FuseLifecycle, UnmountWhileIdleEndsWait) {
  RequireFuse();
  TestMount m;
  ASSERT_MOUNTED(m);
  ASSERT_TRUE(m.fs().Attach("a", SmallTree("a", "x")).ok());
  EXPECT_EQ(ipfly::testing::ReadFile(m / "a/file"), "x");
  auto waiter = std::async(std::launch::async, [&] { m.fs().Wait(); });
  EXPECT_EQ(waiter.wait_for(milliseconds(200)), std::future_status::timeout);
  auto start = steady_clock::now();
  // From two threads at once: both return after the unmount is complete.
  auto other = std::async(std::launch::async, [&] { m.fs().Unmount(); });
  m.fs().Unmount();
  other.get();
  EXPECT_LT(steady_clock::now() - start, milliseconds(900)) << "idle unmount needs no grace";
  EXPECT_EQ(waiter.wait_for(seconds(5)), std::future_status::ready);
  EXPECT_FALSE(FindMount(m.mnt()).has_value());
  m.fs().Unmount();                      // idempotent
  m.fs().Wait();                         // returns at once
  EXPECT_TRUE(m.fs().Detach("a").ok());  // the table still works; nothing to invalidate
}

TEST(FuseLifecycle, ExternalUnmountEndsWait) {
  RequireFuse();
  TestMount m;
  ASSERT_MOUNTED(m);
  auto waiter = std::async(std::launch::async, [&] { m.fs().Wait(); });
  auto r = ipfly::testing::RunCmd({"fusermount3", "-u", m.mnt()});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(waiter.wait_for(seconds(5)), std::future_status::ready);
  EXPECT_FALSE(FindMount(m.mnt()).has_value());
}

// A latch the read hook waits on, bounded like a real tree's deadline.
class Gate {
 public:
  void Enter() {
    std::unique_lock lock(mu_);
    ++waiting_;
    cv_.notify_all();
    cv_.wait_for(lock, seconds(20), [this] { return open_; });
  }
  bool WaitForWaiter(std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [this] { return waiting_ > 0; });
  }
  void Open() {
    std::lock_guard lock(mu_);
    open_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int waiting_ = 0;
  bool open_ = false;
};

TEST(FuseLifecycle, UnmountWhileAReaderIsBlocked) {
  RequireFuse();
  TestMount m;
  ASSERT_MOUNTED(m);
  auto tree = SmallTree("slow", "x");
  Gate gate;
  tree->SetReadHook([&gate](uint64_t, uint64_t) {
    gate.Enter();
    return OkStatus();
  });
  ASSERT_TRUE(m.fs().Attach("slow", tree).ok());

  auto reader = std::async(std::launch::async, [&]() -> int {
    int fd = open((m / "slow/big").c_str(), O_RDONLY);
    if (fd < 0) return errno;
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    int err = n < 0 ? errno : 0;
    close(fd);
    return err;
  });
  ASSERT_TRUE(gate.WaitForWaiter(seconds(5))) << "the read never reached the tree";

  auto start = steady_clock::now();
  auto unmounter = std::async(std::launch::async, [&] { m.fs().Unmount(); });
  // After the grace period the connection is aborted: the reader fails instead of hanging,
  // even though the tree has not answered yet.
  ASSERT_EQ(reader.wait_for(seconds(5)), std::future_status::ready);
  const int err = reader.get();
  EXPECT_TRUE(err == ECONNABORTED || err == ENOTCONN || err == EIO) << strerror(err);
  EXPECT_GE(steady_clock::now() - start, milliseconds(900));
  EXPECT_FALSE(FindMount(m.mnt()).has_value());
  // Unmount returns once the request inside the tree is done.
  EXPECT_EQ(unmounter.wait_for(milliseconds(300)), std::future_status::timeout);
  gate.Open();
  EXPECT_EQ(unmounter.wait_for(seconds(5)), std::future_status::ready);
}

// Starts the helper that mounts at `mnt`, waits until its tree is visible, then SIGKILLs it.
void CrashAServerAt(const std::string& mnt) {
  std::vector<std::string> argv_s = {IPFLY_FUSEFS_MOUNT_CHILD, mnt};
  std::vector<char*> argv;
  for (auto& a : argv_s) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = -1;
  ASSERT_EQ(posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ), 0);
  const bool up = ipfly::testing::WaitFor(
      [&] { return ipfly::testing::ReadFile(mnt + "/t/hello") == "from the child\n"; },
      milliseconds(10000));
  kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(up) << "the child never served its mount";
  ASSERT_EQ(StatErrno(mnt), ENOTCONN);
}

TEST(FuseLifecycle, CleanStaleMountAfterACrash) {
  RequireFuse();
  ipfly::testing::TempDir tmp;
  const std::string mnt = tmp / "mnt";
  ASSERT_NO_FATAL_FAILURE(CrashAServerAt(mnt));
  EXPECT_TRUE(IsStaleMount(mnt));
  Status s = FuseFs::CleanStaleMount(mnt);
  ASSERT_TRUE(s.ok()) << s.error().ToString();
  EXPECT_EQ(StatErrno(mnt), 0);
  EXPECT_FALSE(FindMount(mnt).has_value());
  EXPECT_TRUE(FuseFs::CleanStaleMount(mnt).ok());  // nothing mounted: OK

  // Mount cleans a stale mount by itself.
  ASSERT_NO_FATAL_FAILURE(CrashAServerAt(mnt));
  {
    FuseOptions o;
    o.mountpoint = mnt;
    auto fs = FuseFs::Mount(o);
    ASSERT_TRUE(fs.ok()) << fs.error().ToString();
    ASSERT_TRUE((*fs)->Attach("t", SmallTree("t", "again")).ok());
    EXPECT_EQ(ipfly::testing::ReadFile(mnt + "/t/file"), "again");
  }
  EXPECT_FALSE(FindMount(mnt).has_value());
  ForceUnmount(mnt);
}

TEST(FuseLifecycle, MountCreatesTheMountpoint) {
  RequireFuse();
  ipfly::testing::TempDir tmp;
  FuseOptions o;
  o.mountpoint = tmp / "x/y/mnt/";
  {
    auto fs = FuseFs::Mount(o);
    ASSERT_TRUE(fs.ok()) << fs.error().ToString();
    EXPECT_EQ((*fs)->mountpoint(), tmp.path() + "/x/y/mnt");
    EXPECT_TRUE(FindMount((*fs)->mountpoint()).has_value());
  }
  EXPECT_FALSE(FindMount(tmp.path() + "/x/y/mnt").has_value());
  ForceUnmount(tmp.path() + "/x/y/mnt");
}

}  // namespace
}  // namespace ipfly::fusefs
