// Kernel overlayfs on top of two trees served by one FUSE mount, as the snapshotter stacks image
// layers: whiteouts (char 0/0) and opaque directories (trusted.overlay.opaque=y) reported by the
// trees must give the merged view a container expects.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <set>
#include <string>

#include "fusefs/fuse_fs.h"
#include "fusefs/tests/mem_tree.h"
#include "fusefs/tests/test_mount.h"

namespace ipfly::fusefs {
namespace {

using testing::MemTree;

// An overlay (or tmpfs) mount that is always undone.
class ScopedMount {
 public:
  ScopedMount(const std::string& target, const std::string& type, const std::string& options)
      : target_(target) {
    std::filesystem::create_directories(target);
    if (mount(type.c_str(), target.c_str(), type.c_str(), 0, options.c_str()) == 0) {
      mounted_ = true;
    } else {
      error_ = "mount -t " + type + " -o " + options + " " + target + ": " + strerror(errno);
    }
  }
  ~ScopedMount() {
    if (mounted_ && umount2(target_.c_str(), 0) != 0) umount2(target_.c_str(), MNT_DETACH);
  }
  bool ok() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::string target_;
  bool mounted_ = false;
  std::string error_;
};

std::set<std::string> List(const std::string& dir) {
  std::set<std::string> names;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    names.insert(e.path().filename().string());
  }
  EXPECT_FALSE(ec) << dir << ": " << ec.message();
  return names;
}

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

// The lower layer of an image and the layer above it.
std::shared_ptr<MemTree> LowerLayer() {
  auto t = std::make_shared<MemTree>("lower");
  t->AddFile("etc/os-release", "ID=lower\n");
  t->AddFile("etc/keep.conf", "keep\n");
  t->AddFile("etc/removed.conf", "removed\n");
  t->AddFile("app/old1", "old1\n");
  t->AddFile("app/old2", "old2\n");
  t->AddFile("shared", "from lower\n");
  t->AddFile("bin/tool", "#!/bin/sh\necho lower\n", 0755);
  return t;
}

std::shared_ptr<MemTree> UpperLayer() {
  auto t = std::make_shared<MemTree>("upper");
  t->AddFile("etc/new.conf", "new\n");
  t->AddWhiteout("etc/removed.conf");  // rm /etc/removed.conf in this layer
  t->AddDir("app");                    // rm -rf /app && mkdir /app: opaque
  t->SetXattr("app", "trusted.overlay.opaque", "y");
  t->AddFile("app/new1", "new1\n");
  t->AddFile("shared", "from upper\n");
  return t;
}

class OverlayTest : public ::testing::Test {
 protected:
  void SetUp() override {
    RequireFuse();
    ASSERT_TRUE(Exists("/proc/filesystems"));
    ASSERT_NE(ipfly::testing::ReadFile("/proc/filesystems").find("\toverlay\n"), std::string::npos)
        << "the kernel has no overlayfs";
    mount_ = std::make_unique<TestMount>();
    ASSERT_MOUNTED(*mount_);
    ASSERT_TRUE(mount_->fs().Attach("l0", LowerLayer()).ok());
    ASSERT_TRUE(mount_->fs().Attach("l1", UpperLayer()).ok());
    // The FUSE side reports the overlay markers as they are.
    struct stat st;
    ASSERT_EQ(lstat((*mount_ / "l1/etc/removed.conf").c_str(), &st), 0);
    ASSERT_TRUE(S_ISCHR(st.st_mode) && st.st_rdev == 0);
    char v[8];
    ASSERT_EQ(getxattr((*mount_ / "l1/app").c_str(), "trusted.overlay.opaque", v, sizeof v), 1);
  }
  void TearDown() override { mount_.reset(); }

  void ExpectMergedView(const std::string& merged) {
    EXPECT_EQ(List(merged), (std::set<std::string>{"etc", "app", "shared", "bin"}));
    EXPECT_EQ(List(merged + "/etc"),
              (std::set<std::string>{"os-release", "keep.conf", "new.conf"}));
    EXPECT_FALSE(Exists(merged + "/etc/removed.conf"));
    EXPECT_EQ(List(merged + "/app"), std::set<std::string>{"new1"});
    EXPECT_EQ(ipfly::testing::ReadFile(merged + "/shared"), "from upper\n");
    EXPECT_EQ(ipfly::testing::ReadFile(merged + "/etc/os-release"), "ID=lower\n");
    EXPECT_EQ(ipfly::testing::ReadFile(merged + "/app/new1"), "new1\n");
    auto r = ipfly::testing::RunCmd({merged + "/bin/tool"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, "lower\n");
  }

  std::unique_ptr<TestMount> mount_;
};

TEST_F(OverlayTest, ReadOnlyOverlayOfTwoFuseLayers) {
  const std::string merged = mount_->tmp() / "merged";
  ScopedMount ovl(merged, "overlay", "lowerdir=" + (*mount_ / "l1") + ":" + (*mount_ / "l0"));
  ASSERT_TRUE(ovl.ok()) << ovl.error();
  ExpectMergedView(merged);
  errno = 0;
  EXPECT_EQ(open((merged + "/new").c_str(), O_CREAT | O_WRONLY, 0644), -1);
  EXPECT_EQ(errno, EROFS);
}

TEST_F(OverlayTest, WritableOverlayCopiesUpFromFuse) {
  // A container's rootfs: FUSE layers below, a writable upper on tmpfs.
  const std::string scratch = mount_->tmp() / "scratch";
  ScopedMount tmpfs(scratch, "tmpfs", "size=64m");
  ASSERT_TRUE(tmpfs.ok()) << tmpfs.error();
  std::filesystem::create_directories(scratch + "/upper");
  std::filesystem::create_directories(scratch + "/work");
  const std::string merged = mount_->tmp() / "merged";
  ScopedMount ovl(merged, "overlay",
                  "lowerdir=" + (*mount_ / "l1") + ":" + (*mount_ / "l0") + ",upperdir=" + scratch +
                      "/upper,workdir=" + scratch + "/work");
  ASSERT_TRUE(ovl.ok()) << ovl.error();
  ExpectMergedView(merged);

  // Modify a file that lives in a FUSE layer: overlayfs copies it up (data and xattrs).
  {
    int fd = open((merged + "/etc/os-release").c_str(), O_WRONLY | O_APPEND);
    ASSERT_GE(fd, 0) << strerror(errno);
    ASSERT_EQ(write(fd, "X=1\n", 4), 4);
    close(fd);
  }
  EXPECT_EQ(ipfly::testing::ReadFile(merged + "/etc/os-release"), "ID=lower\nX=1\n");
  EXPECT_EQ(ipfly::testing::ReadFile(*mount_ / "l0/etc/os-release"), "ID=lower\n");
  ASSERT_EQ(unlink((merged + "/etc/keep.conf").c_str()), 0);
  EXPECT_FALSE(Exists(merged + "/etc/keep.conf"));
  EXPECT_TRUE(Exists(*mount_ / "l0/etc/keep.conf"));
}

}  // namespace
}  // namespace ipfly::fusefs
