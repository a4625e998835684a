// Test fixture helpers: a FuseFs mounted in a fresh temporary directory that is always unmounted,
// even when the test fails half-way.
#pragma once

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "core/base/log.h"
#include "fusefs/fuse_fs.h"
#include "fusefs/mount_util.h"
#include "tests/support/process.h"

namespace ipfly::fusefs {

// Fails the current test unless the machine can run real FUSE mounts (never skips).
inline void RequireFuse() {
  struct stat st;
  ASSERT_EQ(stat("/dev/fuse", &st), 0) << "/dev/fuse is missing: FUSE tests cannot run";
  ASSERT_TRUE(S_ISCHR(st.st_mode));
  ASSERT_EQ(geteuid(), 0u) << "fusefs tests mount file systems and need root";
}

// Unmounts (lazily) whatever is still mounted at `path`, reporting it as a test failure.
inline void ForceUnmount(const std::string& path) {
  for (int i = 0; i < 8; ++i) {
    if (!FindMount(path)) return;
    ADD_FAILURE() << path << " was still mounted; detaching it";
    umount2(path.c_str(), MNT_DETACH);
  }
}

class TestMount {
 public:
  explicit TestMount(FuseOptions options = {}) {
    InitLogging("warn");
    mnt_ = tmp_ / "mnt";
    options.mountpoint = mnt_;
    options.threads = options.threads ? options.threads : 16;
    auto fs = FuseFs::Mount(options);
    if (fs.ok()) {
      fs_ = std::move(*fs);
      mnt_ = fs_->mountpoint();
    } else {
      status_ = fs.error();
    }
  }
  ~TestMount() {
    fs_.reset();
    ForceUnmount(mnt_);
  }
  TestMount(const TestMount&) = delete;
  TestMount& operator=(const TestMount&) = delete;

  const Status& status() const { return status_; }
  FuseFs& fs() { return *fs_; }
  bool mounted() const { return fs_ != nullptr; }
  const std::string& mnt() const { return mnt_; }
  std::string operator/(const std::string& rel) const { return mnt_ + "/" + rel; }
  const ipfly::testing::TempDir& tmp() const { return tmp_; }
  // Destroys the FuseFs (unmount + join) now.
  void Reset() { fs_.reset(); }

 private:
  ipfly::testing::TempDir tmp_;
  std::string mnt_;
  Status status_;
  std::unique_ptr<FuseFs> fs_;
};

// Asserts that `m` mounted; use as ASSERT_MOUNTED(m).
#define ASSERT_MOUNTED(m) \
  ASSERT_TRUE((m).mounted()) << ((m).status().ok() ? "" : (m).status().error().ToString())

}  // namespace ipfly::fusefs
