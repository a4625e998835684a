// Compares two directory trees the way a layer test needs: type, permission bits, uid/gid,
// mtime (seconds and nanoseconds), size, file content (sha256), symlink targets, device numbers,
// user.* and trusted.overlay.* xattrs, and hard-link structure (names sharing an inode in one tree
// share one in the other). Returns human-readable differences (empty = identical).
#pragma once

#include <string>
#include <vector>

namespace ipfly::testing {

struct CompareOptions {
  bool compare_mtime = true;
  bool compare_dir_mtime = false;  // extraction order changes directory mtimes
  bool compare_xattrs = true;
  size_t max_differences = 50;
};

std::vector<std::string> CompareTrees(const std::string& expected, const std::string& actual,
                                      const CompareOptions& options = {});

// Rewrites an extracted OCI layer the way containerd's overlay applier does: ".wh.<name>"
// becomes a 0/0 character device <name>, ".wh..wh..opq" becomes the xattr
// trusted.overlay.opaque=y on its directory.
void ConvertWhiteouts(const std::string& root);

}  // namespace ipfly::testing
