// One read-only FUSE filesystem (libfuse3 low-level API, multi-threaded loop) serving many file
// trees: each attached tree is a top-level directory of the mount, named by the caller (the
// snapshotter uses one directory per lazy layer). Trees are attached and detached at run time.
//
// Inode numbers are stable: global ino = (slot << 40) | tree-local ino, where `slot` is assigned
// at Attach and not reused while the process lives; the mount root is ino 1. Hard links in a tree
// share one inode.
//
// Caching: content is immutable, so files are opened with keep_cache and entries/attributes use
// long timeouts (Options). Detach invalidates the kernel's entry for the directory.
//
// Every FUSE request ends in exactly one reply; errors from the tree are mapped to errno (see
// FileTree) and read failures are logged with the tree's Describe() of the inode. No C++
// exception crosses into libfuse.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "core/base/result.h"
#include "fusefs/file_tree.h"

namespace ipfly::fusefs {

struct FuseOptions {
  std::string mountpoint;
  std::string fsname = "ipfly";
  unsigned threads = 16;           // max worker threads of the multi-threaded loop
  double entry_timeout_s = 86400;  // immutable content: cache lookups for a day
  double attr_timeout_s = 86400;
  bool allow_other = true;  // containers run as other users (needs root or user_allow_other)
  // Zero-message opens: the first open of a regular file is answered ENOSYS, after which the
  // kernel stops sending OPEN/RELEASE for files and keeps their page cache (FOPEN_KEEP_CACHE is
  // its default then). Halves the round trips of small-file workloads. The price: a read is
  // resolved by inode, so files still open when their tree is detached get ENOENT instead of
  // their content. For mounts whose trees stay attached while in use (`ipfly mount`).
  bool zero_message_open = false;
  // Readahead of the mount in KiB, set through /sys/class/bdi (root only; 0 = kernel default,
  // 128 KiB). Larger readahead means fewer, larger read requests for sequential readers.
  unsigned read_ahead_kb = 1024;
  // Replies of data a tree holds in a local file (FileTree::ReadLocal: cached spans) are spliced
  // from that file to /dev/fuse instead of copied through this process.
  bool splice_cached_reads = true;
};

class FuseFs {
 public:
  // Mounts at options.mountpoint (created if missing; a stale FUSE mount left there by a crashed
  // process is cleaned first) and starts serving on background threads. The mount shows an empty
  // root directory until trees are attached.
  static Result<std::unique_ptr<FuseFs>> Mount(const FuseOptions& options);
  // Unmounts and joins all threads.
  ~FuseFs();
  FuseFs(const FuseFs&) = delete;
  FuseFs& operator=(const FuseFs&) = delete;

  // Makes `tree` visible as <mountpoint>/<name>. kAlreadyExists if the name is taken,
  // kInvalidArgument for "", ".", "..", or names with '/'.
  Status Attach(const std::string& name, std::shared_ptr<FileTree> tree);
  // Removes the directory; files already open keep working until closed. kNotFound if absent.
  // Invalidates the kernel's cached entry (a write to /dev/fuse that waits for in-flight lookups
  // in the mount root), so it must not be called from a FileTree method.
  Status Detach(const std::string& name);
  std::vector<std::string> Attached() const;
  const std::string& mountpoint() const;

  // Unmounts now and joins the FUSE threads (idempotent, thread-safe; the destructor calls it).
  // The mount is detached lazily (umount2 MNT_DETACH as root, else fusermount3 -u -z). If
  // something still holds it (an open file, a request blocked in a FileTree), its kernel
  // connection is aborted through fusectl within a grace period of 1 s, so those users get
  // ENOTCONN/ECONNABORTED instead of hanging. Returns once requests already inside a FileTree
  // have returned (trees bound their own latency). Must not be called from a FileTree method
  // (a FUSE worker thread), nor from a signal handler: use a thread that waits for signals.
  void Unmount();
  // Blocks until the filesystem is unmounted (by Unmount from another thread, or an external
  // `fusermount3 -u` / `umount`).
  void Wait();

  // Detaches a stale FUSE mount at `path` (e.g. after a crash: "Transport endpoint is not
  // connected"). OK if nothing is mounted there.
  static Status CleanStaleMount(const std::string& path);

 private:
  struct Impl;
  explicit FuseFs(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ipfly::fusefs
