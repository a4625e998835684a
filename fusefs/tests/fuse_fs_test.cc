// Real FUSE mounts of an in-memory tree: attributes of every file type, directories, links,
// xattrs, parallel reads, read errors, and refused writes.
#include "fusefs/fuse_fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "fusefs/tests/mem_tree.h"
#include "fusefs/tests/test_mount.h"

namespace ipfly::fusefs {
namespace {

using testing::MemTree;

constexpr uint64_t kBigSize = 48ull << 20;
constexpr uint64_t kBigSeed = 7;
constexpr int kManyEntries = 5000;

std::string EntryName(int i) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "entry-%05d", i);
  return buf;
}

std::shared_ptr<MemTree> BuildTree() {
  auto t = std::make_shared<MemTree>("t");
  t->AddFile("hello.txt", "hello world\n");
  t->SetMtime("hello.txt", 1700000001, 987654321);
  t->SetOwner("hello.txt", 1000, 1001);
  t->SetXattr("hello.txt", "user.a", "alpha");
  t->SetXattr("hello.txt", "user.big", std::string(300, 'x'));
  t->AddDir("dir/sub", 0750);
  t->AddSymlink("link", "hello.txt");
  t->AddFile("hl1", "shared inode\n");
  t->AddHardLink("dir/hl2", "hl1");
  t->AddDevice("cdev", S_IFCHR, 1, 3);
  t->AddDevice("bdev", S_IFBLK, 259, 70000);  // minor > 255: needs the full makedev encoding
  t->AddFifo("fifo");
  t->AddFile("empty", "");
  t->AddGeneratedFile("big.bin", kBigSize, kBigSeed);
  t->AddDir("many");
  for (int i = 0; i < kManyEntries; ++i) {
    const std::string p = "many/" + EntryName(i);
    if (i % 10 == 0) {
      t->AddDir(p);
    } else if (i % 10 == 1) {
      t->AddSymlink(p, "../hello.txt");
    } else {
      t->AddFile(p, std::to_string(i));
    }
  }
  return t;
}

class FuseFsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { tree_ = BuildTree(); }
  static void TearDownTestSuite() { tree_.reset(); }

  void SetUp() override {
    RequireFuse();
    mount_ = std::make_unique<TestMount>();
    ASSERT_MOUNTED(*mount_);
    ASSERT_TRUE(mount_->fs().Attach("t", tree_).ok());
  }
  void TearDown() override {
    tree_->SetReadHook(nullptr);
    mount_.reset();
  }
  std::string P(const std::string& rel) const { return *mount_ / ("t/" + rel); }

  static std::shared_ptr<MemTree> tree_;
  std::unique_ptr<TestMount> mount_;
};
std::shared_ptr<MemTree> FuseFsTest::tree_;

struct stat Lstat(const std::string& path) {
  struct stat st {};
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path << ": " << strerror(errno);
  return st;
}

TEST_F(FuseFsTest, StatOfEveryFileType) {
  struct stat f = Lstat(P("hello.txt"));
  EXPECT_TRUE(S_ISREG(f.st_mode));
  EXPECT_EQ(f.st_mode & 07777, 0644u);
  EXPECT_EQ(f.st_size, 12);
  EXPECT_EQ(f.st_blocks, 1);
  EXPECT_EQ(f.st_nlink, 1u);
  EXPECT_EQ(f.st_uid, 1000u);
  EXPECT_EQ(f.st_gid, 1001u);
  EXPECT_EQ(f.st_mtim.tv_sec, 1700000001);
  EXPECT_EQ(f.st_mtim.tv_nsec, 987654321);
  EXPECT_EQ(f.st_atim.tv_nsec, 987654321);
  EXPECT_EQ(f.st_ctim.tv_sec, 1700000001);
  EXPECT_EQ(f.st_ino, (uint64_t{1} << 40) | tree_->InoOf("hello.txt"));

  struct stat d = Lstat(P("dir"));
  EXPECT_TRUE(S_ISDIR(d.st_mode));
  EXPECT_EQ(d.st_nlink, 3u);  // ".", its entry, and sub/..
  EXPECT_EQ(Lstat(P("dir/sub")).st_mode & 07777, 0750u);

  struct stat l = Lstat(P("link"));
  EXPECT_TRUE(S_ISLNK(l.st_mode));
  EXPECT_EQ(l.st_size, 9);

  struct stat h1 = Lstat(P("hl1")), h2 = Lstat(P("dir/hl2"));
  EXPECT_EQ(h1.st_ino, h2.st_ino);
  EXPECT_EQ(h1.st_nlink, 2u);
  EXPECT_EQ(h2.st_nlink, 2u);

  struct stat c = Lstat(P("cdev"));
  EXPECT_TRUE(S_ISCHR(c.st_mode));
  EXPECT_EQ(major(c.st_rdev), 1u);
  EXPECT_EQ(minor(c.st_rdev), 3u);
  struct stat b = Lstat(P("bdev"));
  EXPECT_TRUE(S_ISBLK(b.st_mode));
  EXPECT_EQ(major(b.st_rdev), 259u);
  EXPECT_EQ(minor(b.st_rdev), 70000u);
  EXPECT_TRUE(S_ISFIFO(Lstat(P("fifo")).st_mode));
  EXPECT_EQ(Lstat(P("empty")).st_size, 0);

  // stat(1) agrees with lstat(2), nanoseconds included.
  auto r = ipfly::testing::Sh("stat -c '%F %y' " + P("hello.txt"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("regular file"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(".987654321"), std::string::npos) << r.out;
}

TEST_F(FuseFsTest, MountRootListsTreesAndHasInodeOne) {
  struct stat root = Lstat(mount_->mnt());
  EXPECT_EQ(root.st_ino, 1u);
  EXPECT_TRUE(S_ISDIR(root.st_mode));
  EXPECT_EQ(root.st_nlink, 3u);
  struct stat t = Lstat(*mount_ / "t");
  EXPECT_EQ(t.st_ino, (uint64_t{1} << 40) | 1);
  auto r = ipfly::testing::Sh("ls -a " + mount_->mnt());
  EXPECT_EQ(r.out, ".\n..\nt\n");
  errno = 0;
  EXPECT_NE(lstat((*mount_ / "absent").c_str(), &t), 0);
  EXPECT_EQ(errno, ENOENT);
}

TEST_F(FuseFsTest, LookupOfMissingNameIsEnoentTwice) {
  struct stat st;
  for (int i = 0; i < 2; ++i) {  // the second answer comes from the kernel's negative dentry
    errno = 0;
    EXPECT_NE(lstat(P("nope").c_str(), &st), 0);
    EXPECT_EQ(errno, ENOENT);
  }
  errno = 0;
  EXPECT_NE(lstat(P("hello.txt/x").c_str(), &st), 0);
  EXPECT_EQ(errno, ENOTDIR);
}

TEST_F(FuseFsTest, ReaddirOfFiveThousandEntries) {
  auto r = ipfly::testing::Sh("ls -f " + P("many") + " | wc -l");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(std::stoi(r.out), kManyEntries + 2);

  // Both readdir flavours: a fresh open (readdirplus is used for the first listing) and again.
  for (int round = 0; round < 2; ++round) {
    DIR* d = opendir(P("many").c_str());
    ASSERT_NE(d, nullptr);
    std::map<std::string, unsigned char> seen;
    long mid_pos = -1;
    std::vector<std::string> after_mid;
    while (dirent* e = readdir(d)) {
      EXPECT_TRUE(seen.emplace(e->d_name, e->d_type).second) << "duplicate " << e->d_name;
      if (seen.size() == 2500) mid_pos = telldir(d);
      if (mid_pos >= 0 && seen.size() > 2500) after_mid.push_back(e->d_name);
    }
    ASSERT_EQ(seen.size(), size_t{kManyEntries} + 2);
    EXPECT_EQ(seen["."], DT_DIR);
    EXPECT_EQ(seen[".."], DT_DIR);
    for (int i = 0; i < kManyEntries; ++i) {
      auto it = seen.find(EntryName(i));
      ASSERT_NE(it, seen.end()) << EntryName(i);
      const unsigned char want = i % 10 == 0 ? DT_DIR : i % 10 == 1 ? DT_LNK : DT_REG;
      EXPECT_EQ(it->second, want) << EntryName(i);
    }
    // Offsets are stable: seeking back to a remembered position replays the same tail.
    ASSERT_GE(mid_pos, 0);
    seekdir(d, mid_pos);
    std::vector<std::string> replay;
    while (dirent* e = readdir(d)) replay.push_back(e->d_name);
    EXPECT_EQ(replay, after_mid);
    closedir(d);
  }
  EXPECT_TRUE(S_ISLNK(Lstat(P("many/" + EntryName(1))).st_mode));
  EXPECT_EQ(ipfly::testing::ReadFile(P("many/" + EntryName(2))), "2");
}

TEST_F(FuseFsTest, Readlink) {
  char buf[64];
  ssize_t n = readlink(P("link").c_str(), buf, sizeof buf);
  ASSERT_EQ(n, 9);
  EXPECT_EQ(std::string(buf, 9), "hello.txt");
  EXPECT_EQ(ipfly::testing::ReadFile(P("link")), "hello world\n");  // followed by the kernel
  errno = 0;
  EXPECT_EQ(readlink(P("hello.txt").c_str(), buf, sizeof buf), -1);
  EXPECT_EQ(errno, EINVAL);
}

TEST_F(FuseFsTest, XattrsWithSizeProbing) {
  const std::string f = P("hello.txt");
  EXPECT_EQ(getxattr(f.c_str(), "user.a", nullptr, 0), 5);
  char buf[512];
  ASSERT_EQ(getxattr(f.c_str(), "user.a", buf, sizeof buf), 5);
  EXPECT_EQ(std::string(buf, 5), "alpha");
  errno = 0;
  EXPECT_EQ(getxattr(f.c_str(), "user.a", buf, 2), -1);
  EXPECT_EQ(errno, ERANGE);
  EXPECT_EQ(getxattr(f.c_str(), "user.big", nullptr, 0), 300);
  errno = 0;
  EXPECT_EQ(getxattr(f.c_str(), "user.missing", buf, sizeof buf), -1);
  EXPECT_EQ(errno, ENODATA);

  const std::string names("user.a\0user.big\0", 16);
  EXPECT_EQ(listxattr(f.c_str(), nullptr, 0), 16);
  ASSERT_EQ(listxattr(f.c_str(), buf, sizeof buf), 16);
  EXPECT_EQ(std::string(buf, 16), names);
  errno = 0;
  EXPECT_EQ(listxattr(f.c_str(), buf, 3), -1);
  EXPECT_EQ(errno, ERANGE);
  EXPECT_EQ(listxattr(P("hl1").c_str(), buf, sizeof buf), 0);

  errno = 0;
  EXPECT_EQ(getxattr(mount_->mnt().c_str(), "user.a", buf, sizeof buf), -1);
  EXPECT_EQ(errno, ENODATA);
  EXPECT_EQ(listxattr(mount_->mnt().c_str(), buf, sizeof buf), 0);
}

TEST_F(FuseFsTest, ParallelRandomReadsMatch) {
  const std::string path = P("big.bin");
  ASSERT_EQ(Lstat(path).st_size, static_cast<off_t>(kBigSize));
  std::atomic<int> mismatches{0}, errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&, t] {
      int fd = open(path.c_str(), O_RDONLY);
      if (fd < 0) {
        ++errors;
        return;
      }
      std::mt19937_64 rng(t);
      std::vector<uint8_t> got(1 << 20), want(1 << 20);
      for (int i = 0; i < 60; ++i) {
        const uint64_t off = rng() % kBigSize;
        const size_t len = 1 + rng() % got.size();
        ssize_t n = pread(fd, got.data(), len, static_cast<off_t>(off));
        const size_t expect = std::min<uint64_t>(len, kBigSize - off);
        if (n != static_cast<ssize_t>(expect)) {
          ++errors;
          continue;
        }
        MemTree::FillGenerated(kBigSeed, off, want.data(), expect);
        if (std::memcmp(got.data(), want.data(), expect) != 0) ++mismatches;
      }
      // A read across EOF is short, one at EOF is empty.
      uint8_t tail[100];
      if (pread(fd, tail, sizeof tail, static_cast<off_t>(kBigSize - 10)) != 10) ++errors;
      if (pread(fd, tail, sizeof tail, static_cast<off_t>(kBigSize)) != 0) ++errors;
      close(fd);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(mismatches.load(), 0);
}

TEST_F(FuseFsTest, ReadErrorIsEioPromptlyAndLogged) {
  // Installed before the failing tree is attached (and left installed): the worker threads that
  // log then see it through the tree table's lock.
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  spdlog::default_logger()->sinks().push_back(sink);
  auto tree = std::make_shared<MemTree>("failing");
  const uint64_t bad = tree->AddGeneratedFile("bad.bin", 1 << 20, 99);
  tree->AddFile("good", "still fine\n");
  tree->SetReadHook([bad](uint64_t ino, uint64_t) -> Status {
    if (ino == bad) return Unavailable("no provider has the block");
    return OkStatus();
  });
  ASSERT_TRUE(mount_->fs().Attach("failing", tree).ok());

  int fd = open((*mount_ / "failing/bad.bin").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  char buf[4096];
  auto start = std::chrono::steady_clock::now();
  errno = 0;
  EXPECT_EQ(pread(fd, buf, sizeof buf, 0), -1);
  EXPECT_EQ(errno, EIO);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  close(fd);
  // Other files of the same tree, and other trees, still read.
  EXPECT_EQ(ipfly::testing::ReadFile(*mount_ / "failing/good"), "still fine\n");
  EXPECT_EQ(ipfly::testing::ReadFile(P("hello.txt")), "hello world\n");

  bool logged = false;
  for (const auto& line : sink->last_formatted()) {
    if (line.find("failing /bad.bin") != std::string::npos &&
        line.find("no provider has the block") != std::string::npos) {
      logged = true;
    }
  }
  EXPECT_TRUE(logged) << "the read error should be logged with the tree's Describe()";
}

void ExpectErrno(int rc, int want, const char* what) {
  const int err = errno;
  EXPECT_EQ(rc, -1) << what;
  EXPECT_EQ(err, want) << what << ": " << strerror(err);
}

TEST_F(FuseFsTest, WritesAreRefused) {
  const std::string f = P("hello.txt"), d = P("dir");
  errno = 0;
  ExpectErrno(open(f.c_str(), O_WRONLY), EROFS, "open O_WRONLY");
  ExpectErrno(open(f.c_str(), O_RDWR), EROFS, "open O_RDWR");
  ExpectErrno(open(f.c_str(), O_RDONLY | O_TRUNC), EROFS, "open O_TRUNC");
  ExpectErrno(open(P("new").c_str(), O_CREAT | O_WRONLY, 0644), EROFS, "creat");
  ExpectErrno(mkdir(P("newdir").c_str(), 0755), EROFS, "mkdir");
  ExpectErrno(unlink(f.c_str()), EROFS, "unlink");
  ExpectErrno(rmdir(P("dir/sub").c_str()), EROFS, "rmdir");
  ExpectErrno(rename(f.c_str(), P("renamed").c_str()), EROFS, "rename");
  ExpectErrno(symlink("x", P("sym").c_str()), EROFS, "symlink");
  ExpectErrno(link(f.c_str(), P("lnk").c_str()), EROFS, "link");
  ExpectErrno(truncate(f.c_str(), 0), EROFS, "truncate");
  ExpectErrno(chmod(f.c_str(), 0600), EROFS, "chmod");
  ExpectErrno(chown(f.c_str(), 1, 1), EROFS, "chown");
  ExpectErrno(utimes(f.c_str(), nullptr), EROFS, "utimes");
  ExpectErrno(setxattr(f.c_str(), "user.x", "1", 1, 0), EROFS, "setxattr");
  ExpectErrno(removexattr(f.c_str(), "user.a"), EROFS, "removexattr");
  ExpectErrno(mknod(P("node").c_str(), S_IFIFO | 0644, 0), EROFS, "mknod");
  ExpectErrno(access(f.c_str(), W_OK), EROFS, "access W_OK");
  EXPECT_EQ(access(f.c_str(), R_OK), 0);
  ExpectErrno(mkdir((*mount_ / "newtree").c_str(), 0755), EROFS, "mkdir in the mount root");
  EXPECT_EQ(ipfly::testing::ReadFile(f), "hello world\n");
}

TEST_F(FuseFsTest, StatfsAndMountOptions) {
  struct statvfs sv {};
  ASSERT_EQ(statvfs(P("hello.txt").c_str(), &sv), 0);
  EXPECT_EQ(sv.f_bsize, 4096u);
  EXPECT_EQ(sv.f_namemax, 255u);
  EXPECT_TRUE(sv.f_flag & ST_RDONLY);
  EXPECT_EQ(sv.f_files, 2u);  // the root and one tree

  auto m = FindMount(mount_->mnt());
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->fstype, "fuse.ipfly");
  auto r = ipfly::testing::Sh("grep ' " + mount_->mnt() + " ' /proc/self/mountinfo");
  EXPECT_NE(r.out.find(" ro,"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("noatime"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(" ipfly "), std::string::npos) << r.out;  // fsname is the source
  EXPECT_NE(r.out.find("default_permissions"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("allow_other"), std::string::npos) << r.out;
}

TEST_F(FuseFsTest, OtherUsersCanReadWithDefaultPermissions) {
  // allow_other lets uid 65534 in; default_permissions makes the kernel check the modes.
  ASSERT_EQ(chmod(mount_->tmp().path().c_str(), 0755), 0);  // mkdtemp made it 0700
  auto ok = ipfly::testing::RunCmd(
      {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", P("hello.txt")});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_EQ(ok.out, "hello world\n");
  auto denied = ipfly::testing::RunCmd(
      {"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "ls", P("dir/sub")});
  EXPECT_NE(denied.exit_code, 0);  // dir/sub is 0750 root:root
  EXPECT_NE(denied.err.find("Permission denied"), std::string::npos) << denied.err;
}

// A tree with a bug: exceptions must not unwind into libfuse.
class ThrowingTree : public MemTree {
 public:
  ThrowingTree() : MemTree("throwing") {
    AddSymlink("link", "target");
    AddFile("file", "data");
  }
  Result<std::string> ReadLink(uint64_t) override { throw std::runtime_error("boom"); }
  Result<size_t> Read(uint64_t, uint64_t, MutableByteView) override { throw std::bad_alloc(); }
};

TEST_F(FuseFsTest, ExceptionsFromATreeBecomeEio) {
  ASSERT_TRUE(mount_->fs().Attach("throwing", std::make_shared<ThrowingTree>()).ok());
  char buf[16];
  errno = 0;
  EXPECT_EQ(readlink((*mount_ / "throwing/link").c_str(), buf, sizeof buf), -1);
  EXPECT_EQ(errno, EIO);
  int fd = open((*mount_ / "throwing/file").c_str(), O_RDONLY);
  ASSERT_GE(fd, 0);
  errno = 0;
  EXPECT_EQ(pread(fd, buf, sizeof buf, 0), -1);
  EXPECT_EQ(errno, EIO);
  close(fd);
  EXPECT_EQ(ipfly::testing::ReadFile(P("hello.txt")), "hello world\n");  // still serving
}

}  // namespace
}  // namespace ipfly::fusefs
