// The two interfaces fusefs depends on: a read-only file tree with inode numbers, and reads of
// file content. fusefs never sees HTTP, CIDs or tar: a layer index implements FileTree (layer/),
// tests implement it in memory.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/bytes.h"
#include "core/base/result.h"

namespace ipfly::fusefs {

// Tree-local inode numbers: kRootIno is the tree's root directory; numbers are stable for the
// tree's lifetime and below 2^40. Hard links are one inode.
inline constexpr uint64_t kRootIno = 1;
inline constexpr uint64_t kMaxTreeIno = (uint64_t{1} << 40) - 1;

struct Attr {
  uint64_t ino = 0;
  uint32_t mode = 0;  // full st_mode: S_IFREG/S_IFDIR/S_IFLNK/S_IFCHR/S_IFBLK/S_IFIFO | 07777
  uint32_t nlink = 1;
  uint32_t uid = 0, gid = 0;
  uint64_t size = 0;    // files: content size; symlinks: target length; dirs: any (4096 is usual)
  uint64_t blocks = 0;  // 512-byte blocks (st_blocks)
  uint32_t rdev_major = 0, rdev_minor = 0;
  int64_t mtime_sec = 0;
  uint32_t mtime_nsec = 0;  // atime and ctime are reported equal to mtime
};

struct DirEntry {
  std::string name;
  uint64_t ino = 0;
  uint32_t mode = 0;  // st_mode (at least the S_IFMT bits)
};

// All methods are called concurrently from FUSE worker threads and must be thread-safe.
// Errors map to errno at the FUSE boundary: kNotFound → ENOENT (ENODATA for xattrs),
// kInvalidArgument → EINVAL, kTimeout/kUnavailable/kCorrupt/kIo/other → EIO.
class FileTree {
 public:
  virtual ~FileTree() = default;

  virtual Result<Attr> GetAttr(uint64_t ino) = 0;
  // The inode of `name` in directory `parent`; kNotFound if absent.
  virtual Result<uint64_t> Lookup(uint64_t parent, std::string_view name) = 0;
  // Entries of a directory in a stable order, without "." and "..".
  virtual Result<std::vector<DirEntry>> ReadDir(uint64_t ino) = 0;
  virtual Result<std::string> ReadLink(uint64_t ino) = 0;
  virtual Result<std::vector<std::string>> ListXattr(uint64_t ino) = 0;
  // kNotFound if the attribute does not exist.
  virtual Result<std::string> GetXattr(uint64_t ino, std::string_view name) = 0;
  // Reads file content [off, off + out.size()); returns the bytes read (short only at EOF).
  // May block to fetch data but must return (success or error) within its own deadline.
  virtual Result<size_t> Read(uint64_t ino, uint64_t off, MutableByteView out) = 0;
  // Zero-copy reads. If [off, off + len) of the file, cut at the end of the file and not
  // empty, is all held in a local file, calls `send(fd, fd_offset, n)` once with the descriptor,
  // the offset of the range in it and its length, keeping it valid and unchanged until `send`
  // returns, and returns send's status. Returns kNotFound without calling `send` when the range
  // is not all local, is empty, or the tree keeps no such file (the caller then uses Read).
  // Never fetches. Default: kNotFound.
  using SendLocal = std::function<Status(int fd, uint64_t fd_offset, size_t n)>;
  virtual Status ReadLocal(uint64_t ino, uint64_t off, size_t len, const SendLocal& send) {
    (void)ino, (void)off, (void)len, (void)send;
    return NotFound("no local copy");
  }
  // A human-readable name of the inode for log lines ("<layer> <path>").
  virtual std::string Describe(uint64_t ino) = 0;
};

}  // namespace ipfly::fusefs
