// Kernel-side helpers for FUSE mounts, independent of libfuse: finding a mount in
// /proc/self/mountinfo, detaching it lazily, and aborting a FUSE connection through fusectl.
// Internal to fusefs/ (used by FuseFs and its tests). All functions are thread-safe.
#pragma once

#include <optional>
#include <string>

#include "core/base/result.h"

namespace ipfly::fusefs {

struct MountEntry {
  std::string mount_point;  // unescaped absolute path
  std::string fstype;       // e.g. "fuse.ipfly", "overlay"
  unsigned dev_major = 0;   // st_dev of the mounted file system
  unsigned dev_minor = 0;
};

// The topmost mount whose mount point is exactly `path` (absolute, symlink-free), as listed in
// /proc/self/mountinfo; nullopt if nothing is mounted there.
std::optional<MountEntry> FindMount(const std::string& path);

// Detaches the mount at `path` lazily: umount2(MNT_DETACH) when running as root, otherwise
// `fusermount3 -u -z`. The kernel tears the file system down once nothing uses it any more.
Status LazyUnmount(const std::string& path);

// Aborts the FUSE connection of the file system with device (major, minor) by writing to
// /sys/fs/fuse/connections/<dev>/abort (mounting fusectl there first if it is missing and we are
// root). Pending and future requests of that mount then fail with ECONNABORTED/ENOTCONN and the
// server's reads of /dev/fuse return ENODEV.
Status AbortFuseConnection(unsigned dev_major, unsigned dev_minor);

// True if stat(path) fails with ENOTCONN or ECONNABORTED: a FUSE mount whose server is gone.
bool IsStaleMount(const std::string& path);

}  // namespace ipfly::fusefs
