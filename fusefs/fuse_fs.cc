#include "fusefs/fuse_fs.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <sstream>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "core/base/log.h"
#include "fusefs/fuse_api.h"
#include "fusefs/mount_util.h"

namespace ipfly::fusefs {
namespace {

// Global inode = (slot << kSlotShift) | tree-local inode; slot 0 holds only the mount root (ino 1).
constexpr int kSlotShift = 40;
constexpr uint64_t kMaxSlot = (uint64_t{1} << (64 - kSlotShift)) - 1;
// d_ino reported for ".." when the parent is not known (FileTree has no parent links); the
// kernel does not use it, and it can never collide with a tree inode (those are >= 2^40).
constexpr uint64_t kUnknownIno = 0xffffffff;
// Unmount: how long a lazily detached mount that is still in use (open files, a blocked request)
// may keep being served before its connection is aborted.
constexpr auto kUnmountGrace = std::chrono::seconds(1);
constexpr unsigned kBlockSize = 4096;
constexpr unsigned kNameMax = 255;

uint64_t GlobalIno(uint64_t slot, uint64_t local) { return (slot << kSlotShift) | local; }
uint64_t SlotOf(uint64_t ino) { return ino >> kSlotShift; }
uint64_t LocalOf(uint64_t ino) { return ino & kMaxTreeIno; }
bool ValidLocalIno(uint64_t local) { return local != 0 && local <= kMaxTreeIno; }

// file_tree.h: kNotFound → ENOENT (ENODATA for xattrs), kInvalidArgument → EINVAL, rest → EIO.
int ToErrno(const Error& e, bool xattr = false) {
  switch (e.code()) {
    case Errc::kNotFound:
      return xattr ? ENODATA : ENOENT;
    case Errc::kInvalidArgument:
      return EINVAL;
    default:
      return EIO;
  }
}

struct stat ToStat(const Attr& a, uint64_t ino) {
  struct stat st {};
  st.st_ino = ino;
  st.st_mode = a.mode;
  st.st_nlink = a.nlink;
  st.st_uid = a.uid;
  st.st_gid = a.gid;
  st.st_size = static_cast<off_t>(a.size);
  st.st_blocks = static_cast<blkcnt_t>(a.blocks);
  st.st_blksize = kBlockSize;
  st.st_rdev = makedev(a.rdev_major, a.rdev_minor);
  st.st_mtim.tv_sec = a.mtime_sec;
  st.st_mtim.tv_nsec = a.mtime_nsec;
  st.st_atim = st.st_mtim;
  st.st_ctim = st.st_mtim;
  return st;
}

// What fi->fh points to for files and directories: the tree is held here so that open files and
// directories keep working after their tree is detached.
struct Handle {
  virtual ~Handle() = default;
  std::shared_ptr<FileTree> tree;  // null for the mount root directory
  uint64_t slot = 0;
  uint64_t local = 0;
};

struct FileHandle : Handle {};

struct DirHandle : Handle {
  struct Entry {
    std::string name;
    uint64_t ino = 0;  // global
    uint32_t mode = 0;
    uint64_t local = 0;              // 0 for "." and "..": no attributes in readdirplus
    std::shared_ptr<FileTree> tree;  // mount root listing only: the attached tree
  };
  std::mutex mu;
  bool loaded = false;
  std::vector<Entry> entries;  // ".", "..", then the children; index + 1 is the next offset
};

Handle* HandleOf(const fuse_file_info* fi) {
  return fi ? reinterpret_cast<Handle*>(static_cast<uintptr_t>(fi->fh)) : nullptr;
}

// Routes libfuse's own messages (mount errors, protocol warnings) into spdlog.
void LogFromLibfuse(enum fuse_log_level level, const char* fmt, va_list ap) {
  char buf[1024];
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  size_t n = std::strlen(buf);
  while (n > 0 && buf[n - 1] == '\n') buf[--n] = '\0';
  if (level <= FUSE_LOG_ERR) {
    IPFLY_LOG_ERROR("libfuse: {}", buf);
  } else if (level == FUSE_LOG_WARNING) {
    IPFLY_LOG_WARN("libfuse: {}", buf);
  } else if (level <= FUSE_LOG_INFO) {
    IPFLY_LOG_INFO("libfuse: {}", buf);
  } else {
    IPFLY_LOG_DEBUG("libfuse: {}", buf);
  }
}

// The largest read request whose spliced reply fits a pipe this process may size: libfuse
// splices a reply only if header + data + a few pages fit one pipe, and without
// CAP_SYS_RESOURCE a pipe grows to /proc/sys/fs/pipe-max-size at most (1 MiB by default).
// Otherwise it silently falls back to a fresh buffer per reply, which costs more than a copy.
size_t SpliceMaxRead() {
  size_t pipe_max = 1 << 20;
  if (std::ifstream in("/proc/sys/fs/pipe-max-size"); in) in >> pipe_max;
  size_t r = 128 << 10;  // the kernel's default request size
  while (r * 2 <= (1u << 20) && r * 2 + (64 << 10) <= pipe_max) r *= 2;
  return r;
}

// Escapes a value for libfuse's -o parser, which splits at ',' and treats '\' as an escape.
std::string EscapeMountOption(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == ',' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  return out;
}

struct SessionDeleter {
  void operator()(fuse_session* se) const { fuse_session_destroy(se); }
};
using SessionPtr = std::unique_ptr<fuse_session, SessionDeleter>;

// Logs at most a few read errors per second; a broken layer would otherwise flood the log
// (the kernel retries readahead).
class RateLimiter {
 public:
  // True if a message may be logged now; `suppressed` gets the number dropped since the last one.
  bool Allow(uint64_t* suppressed) {
    std::lock_guard lock(mu_);
    auto now = std::chrono::steady_clock::now();
    if (now - window_start_ >= std::chrono::seconds(1)) {
      window_start_ = now;
      in_window_ = 0;
    }
    if (in_window_ >= kPerSecond) {
      ++suppressed_;
      return false;
    }
    ++in_window_;
    *suppressed = std::exchange(suppressed_, 0);
    return true;
  }

 private:
  static constexpr int kPerSecond = 10;
  std::mutex mu_;
  std::chrono::steady_clock::time_point window_start_{};
  int in_window_ = 0;
  uint64_t suppressed_ = 0;
};

// The file system: tree table, request handlers and the session/loop lifecycle. Request handlers
// run on libfuse worker threads; Attach/Detach/Unmount on API threads.
class Server {
 public:
  Server(const FuseOptions& options, std::string mountpoint)
      : options_(options), mountpoint_(std::move(mountpoint)) {
    clock_gettime(CLOCK_REALTIME, &root_mtime_);
  }
  ~Server();

  Status Start();
  Status Attach(const std::string& name, std::shared_ptr<FileTree> tree);
  Status Detach(const std::string& name);
  std::vector<std::string> Attached() const;
  void Unmount();
  void Wait();
  const std::string& mountpoint() const { return mountpoint_; }

  // libfuse callbacks (see MakeOps). Each sends exactly one reply.
  void Init(fuse_conn_info* conn);
  void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void ReadLink(fuse_req_t req, fuse_ino_t ino);
  void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void ReadDir(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi, bool plus);
  void StatFs(fuse_req_t req);
  void GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  void Access(fuse_req_t req, fuse_ino_t ino, int mask);
  void Release(fuse_req_t req, fuse_file_info* fi);

 private:
  struct Resolved {
    std::shared_ptr<FileTree> tree;  // null: the mount root
    uint64_t slot = 0;
    uint64_t local = 0;
  };
  struct Slot {
    std::string name;
    std::shared_ptr<FileTree> tree;
  };

  // Finds the tree of a global inode; false if its slot is not attached (any more).
  bool Resolve(fuse_ino_t ino, Resolved* out) const;
  struct stat RootStat() const;
  void ReplyEntry(fuse_req_t req, uint64_t slot, uint64_t local, const Attr& attr);
  int LoadDir(DirHandle* h);
  // Fills `out` with the entries of `h` from offset `off`; returns 0 or an errno.
  int FillDir(fuse_req_t req, DirHandle* h, size_t size, off_t off, bool plus,
              std::vector<char>* out);
  void LogReadError(const Handle& h, off_t off, size_t size, const Error& e);
  // Hands `h` to the kernel as fi->fh. The kernel sends RELEASE for it unless the reply fails
  // (interrupted open) or the connection ends first; ~Server frees what is left.
  void ReplyOpen(fuse_req_t req, fuse_file_info* fi, std::unique_ptr<Handle> h);

  void RunLoop();
  void FinishSession();
  bool WaitFinishedFor(std::chrono::steady_clock::duration d);
  void DetachKernelMount();

  const FuseOptions options_;
  const std::string mountpoint_;

  // Attached trees. Requests copy the shared_ptr out under a shared lock.
  mutable std::shared_mutex trees_mu_;
  std::map<std::string, uint64_t> slot_by_name_;
  std::unordered_map<uint64_t, Slot> slots_;
  uint64_t next_slot_ = 1;  // never reused: a global inode always means the same file
  timespec root_mtime_{};

  // Session and kernel connection. session_ lives until ~Server (after the loop thread is
  // joined); session_mu_ serialises users of its device fd (notifications) with closing it.
  SessionPtr session_;
  std::mutex session_mu_;
  bool channel_open_ = false;  // guarded by session_mu_
  bool have_dev_ = false;      // st_dev of the mount, for fusectl abort
  unsigned dev_major_ = 0, dev_minor_ = 0;

  std::thread loop_thread_;
  std::atomic<bool> unmount_requested_{false};
  std::mutex unmount_mu_;  // serialises Unmount callers; the joiner holds it
  bool unmount_started_ = false;
  std::mutex state_mu_;
  std::condition_variable finished_cv_;
  bool finished_ = false;  // the loop has returned and the channel is closed

  std::mutex handles_mu_;
  std::unordered_set<Handle*> handles_;  // open files and directories, owned

  RateLimiter read_error_log_;
};

// ---------------------------------------------------------------------------------------------
// libfuse entry points. No C++ exception may unwind through libfuse's C frames: every handler
// runs inside Guarded, which turns an escaped exception into EIO. Handlers reply as their last
// step, so an exception can only happen before the (single) reply.

Server* ServerOf(fuse_req_t req) { return static_cast<Server*>(fuse_req_userdata(req)); }

void LogEscapedException(const char* op, const char* what) noexcept {
  try {
    IPFLY_LOG_ERROR("fuse {}: {}", op, what);
  } catch (...) {
  }
}

template <typename Fn>
void Guarded(fuse_req_t req, const char* op, Fn&& fn) noexcept {
  try {
    fn();
    return;
  } catch (const std::exception& e) {
    LogEscapedException(op, e.what());  // while `e` is alive
  } catch (...) {
    LogEscapedException(op, "unknown exception");
  }
  fuse_reply_err(req, EIO);
}

void OpInit(void* userdata, fuse_conn_info* conn) {
  try {
    static_cast<Server*>(userdata)->Init(conn);
  } catch (...) {
  }
}
void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  Guarded(req, "lookup", [&] { ServerOf(req)->Lookup(req, parent, name); });
}
// Trees own their inodes, so the kernel's lookup counts need no bookkeeping.
void OpForget(fuse_req_t req, fuse_ino_t, uint64_t) { fuse_reply_none(req); }
void OpForgetMulti(fuse_req_t req, size_t, fuse_forget_data*) { fuse_reply_none(req); }
void OpGetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guarded(req, "getattr", [&] { ServerOf(req)->GetAttr(req, ino, fi); });
}
void OpReadLink(fuse_req_t req, fuse_ino_t ino) {
  Guarded(req, "readlink", [&] { ServerOf(req)->ReadLink(req, ino); });
}
void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guarded(req, "open", [&] { ServerOf(req)->Open(req, ino, fi); });
}
void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Guarded(req, "read", [&] { ServerOf(req)->Read(req, ino, size, off, fi); });
}
void OpRelease(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Guarded(req, "release", [&] { ServerOf(req)->Release(req, fi); });
}
void OpOpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Guarded(req, "opendir", [&] { ServerOf(req)->OpenDir(req, ino, fi); });
}
void OpReadDir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  Guarded(req, "readdir", [&] { ServerOf(req)->ReadDir(req, size, off, fi, false); });
}
void OpReadDirPlus(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  Guarded(req, "readdirplus", [&] { ServerOf(req)->ReadDir(req, size, off, fi, true); });
}
void OpReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Guarded(req, "releasedir", [&] { ServerOf(req)->Release(req, fi); });
}
void OpStatFs(fuse_req_t req, fuse_ino_t) {
  Guarded(req, "statfs", [&] { ServerOf(req)->StatFs(req); });
}
void OpGetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Guarded(req, "getxattr", [&] { ServerOf(req)->GetXattr(req, ino, name, size); });
}
void OpListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Guarded(req, "listxattr", [&] { ServerOf(req)->ListXattr(req, ino, size); });
}
void OpAccess(fuse_req_t req, fuse_ino_t ino, int mask) {
  Guarded(req, "access", [&] { ServerOf(req)->Access(req, ino, mask); });
}

// Everything that would modify the tree. The mount is "ro", so the VFS normally refuses these
// before they reach us; the handlers make the answer explicit instead of ENOSYS.
void OpSetAttr(fuse_req_t req, fuse_ino_t, struct stat*, int, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpMknod(fuse_req_t req, fuse_ino_t, const char*, mode_t, dev_t) { fuse_reply_err(req, EROFS); }
void OpMkdir(fuse_req_t req, fuse_ino_t, const char*, mode_t) { fuse_reply_err(req, EROFS); }
void OpUnlink(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpRmdir(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpSymlink(fuse_req_t req, const char*, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpRename(fuse_req_t req, fuse_ino_t, const char*, fuse_ino_t, const char*, unsigned) {
  fuse_reply_err(req, EROFS);
}
void OpLink(fuse_req_t req, fuse_ino_t, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpWrite(fuse_req_t req, fuse_ino_t, const char*, size_t, off_t, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpCreate(fuse_req_t req, fuse_ino_t, const char*, mode_t, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpSetXattr(fuse_req_t req, fuse_ino_t, const char*, const char*, size_t, int) {
  fuse_reply_err(req, EROFS);
}
void OpRemoveXattr(fuse_req_t req, fuse_ino_t, const char*) { fuse_reply_err(req, EROFS); }
void OpFallocate(fuse_req_t req, fuse_ino_t, int, off_t, off_t, fuse_file_info*) {
  fuse_reply_err(req, EROFS);
}
void OpCopyFileRange(fuse_req_t req, fuse_ino_t, off_t, fuse_file_info*, fuse_ino_t, off_t,
                     fuse_file_info*, size_t, int) {
  fuse_reply_err(req, EROFS);
}

fuse_lowlevel_ops MakeOps() {
  fuse_lowlevel_ops ops{};
  ops.init = OpInit;
  ops.lookup = OpLookup;
  ops.forget = OpForget;
  ops.forget_multi = OpForgetMulti;
  ops.getattr = OpGetAttr;
  ops.readlink = OpReadLink;
  ops.open = OpOpen;
  ops.read = OpRead;
  ops.release = OpRelease;
  ops.opendir = OpOpenDir;
  ops.readdir = OpReadDir;
  ops.readdirplus = OpReadDirPlus;
  ops.releasedir = OpReleaseDir;
  ops.statfs = OpStatFs;
  ops.getxattr = OpGetXattr;
  ops.listxattr = OpListXattr;
  ops.access = OpAccess;
  ops.setattr = OpSetAttr;
  ops.mknod = OpMknod;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.symlink = OpSymlink;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.write = OpWrite;
  ops.create = OpCreate;
  ops.setxattr = OpSetXattr;
  ops.removexattr = OpRemoveXattr;
  ops.fallocate = OpFallocate;
  ops.copy_file_range = OpCopyFileRange;
  return ops;
}

// ---------------------------------------------------------------------------------------------
// Request handlers.

void Server::Init(fuse_conn_info* conn) {
  auto enable = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  // Several reads of one file in flight at once (readahead + application reads in parallel).
  enable(FUSE_CAP_ASYNC_READ);
  enable(FUSE_CAP_PARALLEL_DIROPS);
  // Large layers have large directories: attributes come with the listing, and the kernel
  // switches between plain readdir and readdirplus by itself.
  enable(FUSE_CAP_READDIRPLUS);
  enable(FUSE_CAP_READDIRPLUS_AUTO);
  // Link targets never change: let the kernel keep them in the page cache.
  enable(FUSE_CAP_CACHE_SYMLINKS);
  // Nothing is ever written: no splice of requests. Replies of cached data are spliced from the
  // span cache file (fuse_reply_data with an fd buffer); other replies are memory buffers sent
  // with writev.
  if (options_.splice_cached_reads) {
    enable(FUSE_CAP_SPLICE_WRITE);
    conn->max_read = static_cast<unsigned>(SpliceMaxRead());  // must match the mount option
  } else {
    conn->want &= ~FUSE_CAP_SPLICE_WRITE;
  }
  // AUTO_INVAL_DATA would drop the page cache on attribute changes that never happen.
  conn->want &= ~(FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_SPLICE_READ | FUSE_CAP_SPLICE_MOVE |
                  FUSE_CAP_AUTO_INVAL_DATA | FUSE_CAP_ATOMIC_O_TRUNC | FUSE_CAP_HANDLE_KILLPRIV |
                  FUSE_CAP_POSIX_ACL | FUSE_CAP_IOCTL_DIR | FUSE_CAP_EXPORT_SUPPORT);
  // Readahead requests are "background" requests; the kernel default (12 in flight) starves a
  // server whose reads wait on the network.
  conn->max_background = std::max(16u, options_.threads * 2);
  conn->congestion_threshold = conn->max_background * 3 / 4;
  conn->time_gran = 1;  // nanosecond timestamps
  // max_readahead stays at what the kernel offered (its maximum for this bdi).
}

bool Server::Resolve(fuse_ino_t ino, Resolved* out) const {
  if (ino == FUSE_ROOT_ID) {
    *out = Resolved{};
    return true;
  }
  const uint64_t slot = SlotOf(ino), local = LocalOf(ino);
  if (slot == 0 || !ValidLocalIno(local)) return false;
  std::shared_lock lock(trees_mu_);
  auto it = slots_.find(slot);
  if (it == slots_.end()) return false;
  *out = Resolved{it->second.tree, slot, local};
  return true;
}

struct stat Server::RootStat() const {
  struct stat st {};
  st.st_ino = FUSE_ROOT_ID;
  st.st_mode = S_IFDIR | 0755;
  st.st_blksize = kBlockSize;
  st.st_size = kBlockSize;
  std::shared_lock lock(trees_mu_);
  st.st_nlink = 2 + slots_.size();
  st.st_mtim = root_mtime_;
  st.st_atim = root_mtime_;
  st.st_ctim = root_mtime_;
  return st;
}

void Server::ReplyEntry(fuse_req_t req, uint64_t slot, uint64_t local, const Attr& attr) {
  fuse_entry_param e{};
  e.ino = GlobalIno(slot, local);
  // Inode numbers are never reused within the process (slots are not), so one generation fits.
  e.generation = 1;
  e.attr = ToStat(attr, e.ino);
  e.attr_timeout = options_.attr_timeout_s;
  e.entry_timeout = options_.entry_timeout_s;
  fuse_reply_entry(req, &e);
}

void Server::Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent == FUSE_ROOT_ID) {
    std::shared_ptr<FileTree> tree;
    uint64_t slot = 0;
    {
      std::shared_lock lock(trees_mu_);
      auto it = slot_by_name_.find(name);
      if (it != slot_by_name_.end()) {
        slot = it->second;
        tree = slots_.at(slot).tree;
      }
    }
    // A plain error reply leaves no cached negative entry: the name may be attached any time.
    if (!tree) return (void)fuse_reply_err(req, ENOENT);
    auto attr = tree->GetAttr(kRootIno);
    if (!attr.ok()) return (void)fuse_reply_err(req, ToErrno(attr.error()));
    return ReplyEntry(req, slot, kRootIno, *attr);
  }
  Resolved r;
  if (!Resolve(parent, &r)) return (void)fuse_reply_err(req, ENOENT);
  auto child = r.tree->Lookup(r.local, name);
  if (!child.ok()) {
    if (child.error().code() == Errc::kNotFound) {
      // Trees are immutable: let the kernel cache the miss (ino 0) like a positive entry.
      // Dynamic linkers and PATH searches probe many absent names.
      fuse_entry_param e{};
      e.entry_timeout = options_.entry_timeout_s;
      return (void)fuse_reply_entry(req, &e);
    }
    return (void)fuse_reply_err(req, ToErrno(child.error()));
  }
  if (!ValidLocalIno(*child)) {
    IPFLY_LOG_ERROR("fuse lookup: tree returned invalid inode {} for {}/{}", *child,
                    r.tree->Describe(r.local), name);
    return (void)fuse_reply_err(req, EIO);
  }
  auto attr = r.tree->GetAttr(*child);
  if (!attr.ok()) return (void)fuse_reply_err(req, ToErrno(attr.error()));
  ReplyEntry(req, r.slot, *child, *attr);
}

void Server::GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino == FUSE_ROOT_ID) {
    struct stat st = RootStat();
    // The root changes with Attach/Detach: never let the kernel cache its attributes.
    return (void)fuse_reply_attr(req, &st, 0);
  }
  Resolved r;
  if (Handle* h = HandleOf(fi); h != nullptr && h->tree) {
    // fstat() of an open file: works even after its tree was detached.
    r = Resolved{h->tree, h->slot, h->local};
  } else if (!Resolve(ino, &r)) {
    return (void)fuse_reply_err(req, ENOENT);
  }
  auto attr = r.tree->GetAttr(r.local);
  if (!attr.ok()) return (void)fuse_reply_err(req, ToErrno(attr.error()));
  struct stat st = ToStat(*attr, ino);
  fuse_reply_attr(req, &st, options_.attr_timeout_s);
}

void Server::ReadLink(fuse_req_t req, fuse_ino_t ino) {
  Resolved r;
  if (!Resolve(ino, &r)) return (void)fuse_reply_err(req, ENOENT);
  if (!r.tree) return (void)fuse_reply_err(req, EINVAL);
  auto target = r.tree->ReadLink(r.local);
  if (!target.ok()) return (void)fuse_reply_err(req, ToErrno(target.error()));
  fuse_reply_readlink(req, target->c_str());
}

void Server::Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC)) {
    return (void)fuse_reply_err(req, EROFS);
  }
  if (options_.zero_message_open) {
    // The kernel remembers ENOSYS for the connection: no more OPEN/RELEASE for regular files,
    // reads carry fh 0 and are resolved by inode (see Read).
    return (void)fuse_reply_err(req, ENOSYS);
  }
  Resolved r;
  if (!Resolve(ino, &r)) return (void)fuse_reply_err(req, ENOENT);
  if (!r.tree) return (void)fuse_reply_err(req, EISDIR);
  auto h = std::make_unique<FileHandle>();
  h->tree = std::move(r.tree);
  h->slot = r.slot;
  h->local = r.local;
  fi->keep_cache = 1;  // content is immutable: the page cache survives close/open
  fi->noflush = 1;     // nothing to flush on close
  fi->direct_io = 0;
  ReplyOpen(req, fi, std::move(h));
}

void Server::ReplyOpen(fuse_req_t req, fuse_file_info* fi, std::unique_ptr<Handle> h) {
  Handle* raw = h.get();
  {
    std::lock_guard lock(handles_mu_);
    handles_.insert(raw);
  }
  h.release();
  fi->fh = reinterpret_cast<uintptr_t>(raw);
  // If the open was interrupted the kernel drops the reply and will never send RELEASE.
  if (fuse_reply_open(req, fi) != 0) {
    std::lock_guard lock(handles_mu_);
    handles_.erase(raw);
    delete raw;
  }
}

void Server::Release(fuse_req_t req, fuse_file_info* fi) {
  if (Handle* h = HandleOf(fi)) {
    std::lock_guard lock(handles_mu_);
    if (handles_.erase(h)) delete h;
  }
  fuse_reply_err(req, 0);
}

void Server::LogReadError(const Handle& h, off_t off, size_t size, const Error& e) {
  uint64_t suppressed = 0;
  if (!read_error_log_.Allow(&suppressed)) return;
  IPFLY_LOG_ERROR("fuse read {} [{}, +{}): {}{}", h.tree->Describe(h.local), off, size,
                  e.ToString(),
                  suppressed ? fmt::format(" ({} similar errors suppressed)", suppressed) : "");
}

void Server::Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi) {
  Handle* h = HandleOf(fi);
  FileHandle by_ino;  // zero-message open: no handle, resolve the inode for this read
  if (!h && options_.zero_message_open) {
    Resolved r;
    if (!Resolve(ino, &r) || !r.tree) return (void)fuse_reply_err(req, ENOENT);
    by_ino.tree = std::move(r.tree);
    by_ino.slot = r.slot;
    by_ino.local = r.local;
    h = &by_ino;
  }
  if (!h || !h->tree || off < 0) return (void)fuse_reply_err(req, EINVAL);
  // Cached data is spliced from the cache file to /dev/fuse: no copy through this process, and
  // the tree keeps the range stable until the reply is sent. Once fuse_reply_data ran, the
  // request is answered (or gone), whatever it returned.
  if (options_.splice_cached_reads) {
    bool replied = false;
    Status st = h->tree->ReadLocal(
        h->local, static_cast<uint64_t>(off), size, [&](int fd, uint64_t fd_off, size_t n) {
          fuse_bufvec bv = FUSE_BUFVEC_INIT(n);
          bv.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
          bv.buf[0].fd = fd;
          bv.buf[0].pos = static_cast<off_t>(fd_off);
          replied = true;
          int rc = fuse_reply_data(req, &bv, static_cast<fuse_buf_copy_flags>(0));
          if (rc != 0 && rc != -ENOENT) return Status(ErrnoError("fuse_reply_data", -rc));
          return OkStatus();
        });
    if (replied) {
      if (!st.ok()) LogReadError(*h, off, size, st.error());
      return;
    }
    if (st.error().code() != Errc::kNotFound) {
      LogReadError(*h, off, size, st.error());
      return (void)fuse_reply_err(req, ToErrno(st.error()));
    }
  }
  // One buffer per worker thread, reused across requests (at most max_pages, 1 MiB, each).
  thread_local std::vector<uint8_t> buf;
  if (buf.size() < size) buf.resize(size);
  auto n = h->tree->Read(h->local, static_cast<uint64_t>(off), MutableByteView(buf.data(), size));
  if (!n.ok()) {
    LogReadError(*h, off, size, n.error());
    return (void)fuse_reply_err(req, ToErrno(n.error()));
  }
  fuse_reply_buf(req, reinterpret_cast<const char*>(buf.data()), std::min(*n, size));
}

void Server::OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Resolved r;
  if (!Resolve(ino, &r)) return (void)fuse_reply_err(req, ENOENT);
  auto h = std::make_unique<DirHandle>();
  h->tree = std::move(r.tree);
  h->slot = r.slot;
  h->local = r.local;
  if (h->tree) {
    // Tree directories never change: the kernel may cache their listings across opens. The
    // mount root changes with Attach/Detach and is always read from us.
    fi->cache_readdir = 1;
    fi->keep_cache = 1;
  }
  ReplyOpen(req, fi, std::move(h));
}

int Server::LoadDir(DirHandle* h) {
  using Entry = DirHandle::Entry;
  std::vector<Entry> entries;
  if (!h->tree) {
    entries.push_back(Entry{".", FUSE_ROOT_ID, S_IFDIR, 0, nullptr});
    entries.push_back(Entry{"..", FUSE_ROOT_ID, S_IFDIR, 0, nullptr});
    std::shared_lock lock(trees_mu_);
    for (const auto& [name, slot] : slot_by_name_) {
      entries.push_back(
          Entry{name, GlobalIno(slot, kRootIno), S_IFDIR, kRootIno, slots_.at(slot).tree});
    }
  } else {
    auto children = h->tree->ReadDir(h->local);
    if (!children.ok()) return ToErrno(children.error());
    entries.reserve(children->size() + 2);
    const uint64_t self = GlobalIno(h->slot, h->local);
    entries.push_back(Entry{".", self, S_IFDIR, 0, nullptr});
    entries.push_back(
        Entry{"..", h->local == kRootIno ? FUSE_ROOT_ID : kUnknownIno, S_IFDIR, 0, nullptr});
    for (auto& c : *children) {
      if (!ValidLocalIno(c.ino) || c.name.empty()) {
        IPFLY_LOG_ERROR("fuse readdir {}: skipping entry '{}' with invalid inode {}",
                        h->tree->Describe(h->local), c.name, c.ino);
        continue;
      }
      entries.push_back(
          Entry{std::move(c.name), GlobalIno(h->slot, c.ino), c.mode, c.ino, nullptr});
    }
  }
  h->entries = std::move(entries);
  h->loaded = true;
  return 0;
}

int Server::FillDir(fuse_req_t req, DirHandle* h, size_t size, off_t off, bool plus,
                    std::vector<char>* out) {
  std::lock_guard lock(h->mu);
  // The listing is taken once per open directory, so offsets (entry index + 1) stay valid
  // across the many readdir calls of a large directory, and seekdir works.
  if (!h->loaded) {
    if (int err = LoadDir(h); err != 0) return err;
  }
  std::vector<char>& buf = *out;
  buf.resize(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(std::max<off_t>(off, 0)); i < h->entries.size(); ++i) {
    const DirHandle::Entry& e = h->entries[i];
    const off_t next = static_cast<off_t>(i + 1);
    const size_t room = size - used;
    if (!plus) {
      struct stat st {};
      st.st_ino = e.ino;
      st.st_mode = e.mode;
      size_t need = fuse_add_direntry(req, buf.data() + used, room, e.name.c_str(), &st, next);
      if (need > room) break;
      used += need;
      continue;
    }
    if (fuse_add_direntry_plus(req, nullptr, 0, e.name.c_str(), nullptr, next) > room) break;
    fuse_entry_param ep{};
    ep.attr.st_ino = e.ino;
    ep.attr.st_mode = e.mode;
    // ep.ino == 0 means "no entry to link" for the kernel: used for "." and "..", and when the
    // attributes are not available (the kernel then looks the name up itself).
    if (e.local != 0) {
      FileTree* tree = e.tree ? e.tree.get() : h->tree.get();
      const uint64_t slot = e.tree ? SlotOf(e.ino) : h->slot;
      if (auto attr = tree->GetAttr(e.local); attr.ok()) {
        ep.ino = e.ino;
        ep.generation = 1;
        ep.attr = ToStat(*attr, GlobalIno(slot, e.local));
        ep.attr_timeout = options_.attr_timeout_s;
        ep.entry_timeout = options_.entry_timeout_s;
      }
    }
    used += fuse_add_direntry_plus(req, buf.data() + used, room, e.name.c_str(), &ep, next);
  }
  buf.resize(used);
  return 0;
}

void Server::ReadDir(fuse_req_t req, size_t size, off_t off, fuse_file_info* fi, bool plus) {
  auto* h = static_cast<DirHandle*>(HandleOf(fi));
  if (!h) return (void)fuse_reply_err(req, EBADF);
  std::vector<char> buf;
  // Reply only after h->mu is released: once the reply is in, the process may close the
  // directory and RELEASEDIR (another worker) frees the handle.
  if (int err = FillDir(req, h, size, off, plus, &buf); err != 0) {
    return (void)fuse_reply_err(req, err);
  }
  fuse_reply_buf(req, buf.data(), buf.size());
}

void Server::StatFs(fuse_req_t req) {
  struct statvfs st {};
  st.f_bsize = kBlockSize;
  st.f_frsize = kBlockSize;
  st.f_namemax = kNameMax;
  // FileTree does not expose sizes or inode counts; report the inodes we know about: the root
  // and the attached tree roots. Nothing is free on a read-only file system.
  {
    std::shared_lock lock(trees_mu_);
    st.f_files = 1 + slots_.size();
  }
  st.f_flag = ST_RDONLY;
  fuse_reply_statfs(req, &st);
}

void Server::GetXattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  Resolved r;
  if (!Resolve(ino, &r)) return (void)fuse_reply_err(req, ENOENT);
  if (!r.tree) return (void)fuse_reply_err(req, ENODATA);
  auto value = r.tree->GetXattr(r.local, name);
  if (!value.ok()) return (void)fuse_reply_err(req, ToErrno(value.error(), /*xattr=*/true));
  // getxattr(2) protocol: size 0 asks for the length; a too small buffer is ERANGE.
  if (size == 0) return (void)fuse_reply_xattr(req, value->size());
  if (value->size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, value->data(), value->size());
}

void Server::ListXattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  Resolved r;
  if (!Resolve(ino, &r)) return (void)fuse_reply_err(req, ENOENT);
  std::string list;  // "name1\0name2\0"
  if (r.tree) {
    auto names = r.tree->ListXattr(r.local);
    if (!names.ok()) return (void)fuse_reply_err(req, ToErrno(names.error(), /*xattr=*/true));
    for (const auto& n : *names) {
      list.append(n);
      list.push_back('\0');
    }
  }
  if (size == 0) return (void)fuse_reply_xattr(req, list.size());
  if (list.size() > size) return (void)fuse_reply_err(req, ERANGE);
  fuse_reply_buf(req, list.data(), list.size());
}

void Server::Access(fuse_req_t req, fuse_ino_t ino, int mask) {
  // Only sent without default_permissions (we always mount with it); existence + read-only.
  Resolved r;
  if (!Resolve(ino, &r)) return (void)fuse_reply_err(req, ENOENT);
  fuse_reply_err(req, (mask & W_OK) ? EROFS : 0);
}

// ---------------------------------------------------------------------------------------------
// Tree table.

Status Server::Attach(const std::string& name, std::shared_ptr<FileTree> tree) {
  if (name.empty() || name == "." || name == ".." || name.size() > kNameMax ||
      name.find('/') != std::string::npos || name.find('\0') != std::string::npos) {
    return InvalidArgument("invalid tree name '" + name + "'");
  }
  if (!tree) return InvalidArgument("null tree for '" + name + "'");
  std::unique_lock lock(trees_mu_);
  if (slot_by_name_.count(name)) {
    return Error(Errc::kAlreadyExists, "tree '" + name + "' is already attached");
  }
  if (next_slot_ > kMaxSlot) return TooLarge("out of tree slots");
  const uint64_t slot = next_slot_++;
  slot_by_name_.emplace(name, slot);
  slots_.emplace(slot, Slot{name, std::move(tree)});
  clock_gettime(CLOCK_REALTIME, &root_mtime_);
  return OkStatus();
}

Status Server::Detach(const std::string& name) {
  {
    std::unique_lock lock(trees_mu_);
    auto it = slot_by_name_.find(name);
    if (it == slot_by_name_.end()) return NotFound("tree '" + name + "' is not attached");
    // Requests and open files that already hold the tree keep it alive; new lookups miss.
    slots_.erase(it->second);
    slot_by_name_.erase(it);
    clock_gettime(CLOCK_REALTIME, &root_mtime_);
  }
  // The kernel caches the positive dentry for entry_timeout (a day): drop it now. This write to
  // /dev/fuse takes the root directory's inode lock in the kernel, so it waits for in-flight
  // lookups in the root; those are served by the worker threads, never by this thread. A lookup
  // that saw the tree before the erase above holds that lock until its reply is in, so its
  // dentry is created first and invalidated here.
  std::lock_guard lock(session_mu_);
  if (channel_open_) {
    int rc =
        fuse_lowlevel_notify_inval_entry(session_.get(), FUSE_ROOT_ID, name.data(), name.size());
    if (rc != 0 && rc != -ENOENT) {
      IPFLY_LOG_DEBUG("fuse: invalidating '{}' in {}: {}", name, mountpoint_, strerror(-rc));
    }
  }
  return OkStatus();
}

std::vector<std::string> Server::Attached() const {
  std::shared_lock lock(trees_mu_);
  std::vector<std::string> names;
  for (const auto& [name, slot] : slot_by_name_) names.push_back(name);
  return names;
}

// ---------------------------------------------------------------------------------------------
// Session lifecycle.

Status Server::Start() {
  static std::once_flag log_once;
  std::call_once(log_once, [] { fuse_set_log_func(LogFromLibfuse); });

  std::string opts =
      "ro,noatime,default_permissions,subtype=ipfly,fsname=" + EscapeMountOption(options_.fsname);
  if (options_.splice_cached_reads) opts += ",max_read=" + std::to_string(SpliceMaxRead());
  if (options_.allow_other) {
    if (geteuid() == 0) {
      opts += ",allow_other";
    } else {
      IPFLY_LOG_WARN("fuse: not root, mounting {} without allow_other", mountpoint_);
    }
  }
  std::string prog = "ipfly", dash_o = "-o";
  char* argv[] = {prog.data(), dash_o.data(), opts.data(), nullptr};
  fuse_args args = FUSE_ARGS_INIT(3, argv);
  const fuse_lowlevel_ops ops = MakeOps();
  fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), this);
  fuse_opt_free_args(&args);
  if (se == nullptr) return Internal("fuse_session_new failed (options: " + opts + ")");
  session_.reset(se);
  if (fuse_session_mount(se, mountpoint_.c_str()) != 0) {
    return IoError("mounting FUSE at " + mountpoint_ + " failed (see libfuse log)");
  }
  if (auto m = FindMount(mountpoint_); m && m->fstype == "fuse.ipfly") {
    have_dev_ = true;
    dev_major_ = m->dev_major;
    dev_minor_ = m->dev_minor;
  } else {
    IPFLY_LOG_WARN("fuse: {} not found in /proc/self/mountinfo; Unmount cannot abort it",
                   mountpoint_);
  }
  {
    std::lock_guard lock(session_mu_);
    channel_open_ = true;
  }
  try {
    loop_thread_ = std::thread([this] { RunLoop(); });
  } catch (const std::system_error& e) {
    std::lock_guard lock(session_mu_);
    channel_open_ = false;
    fuse_session_unmount(se);
    return Internal(std::string("starting the FUSE loop thread: ") + e.what());
  }
  return OkStatus();
}

void Server::RunLoop() {
  // Workers inherit this mask: process signals (SIGTERM, SIGINT, ...) go to application threads.
  sigset_t mask;
  sigfillset(&mask);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP}) sigdelset(&mask, sig);
  pthread_sigmask(SIG_BLOCK, &mask, nullptr);
  pthread_setname_np(pthread_self(), "ipfly-fuse");

  int rc = -ENOMEM;
  if (fuse_loop_config* cfg = fuse_loop_cfg_create()) {
    fuse_loop_cfg_set_max_threads(cfg, std::max(1u, options_.threads));
    // Idle workers are kept (the default): libfuse detaches the threads it retires.
    fuse_loop_cfg_set_clone_fd(cfg, 0);
    rc = fuse_session_loop_mt(session_.get(), cfg);
    fuse_loop_cfg_destroy(cfg);
  }
  if (rc != 0) IPFLY_LOG_WARN("fuse: loop for {} ended with {}", mountpoint_, rc);
  FinishSession();
}

// The loop returned: the kernel unmounted us (ENODEV), Unmount asked us to stop, or an error.
void Server::FinishSession() {
  const bool ours = unmount_requested_.load();
  const int fd = fuse_session_fd(session_.get());
  auto channel_dead = [fd] {
    pollfd p{fd, 0, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & POLLERR);
  };
  bool dead = channel_dead();
  if (ours && !dead && have_dev_) {
    // Unmount detached the mount lazily, but something (an open file) keeps it alive and the
    // loop stopped after one more request: nobody would answer that user any more.
    if (Status s = AbortFuseConnection(dev_major_, dev_minor_); !s.ok()) {
      IPFLY_LOG_WARN("fuse: aborting {}: {}", mountpoint_, s.error().ToString());
    }
    dead = channel_dead();
  }
  {
    std::lock_guard lock(session_mu_);
    channel_open_ = false;
    // On a dead channel fuse_session_unmount only closes the fd. On a live one it also unmounts
    // the mount point, which is right only if the mount is still ours (the loop ended by
    // itself); after our lazy unmount the path may already hold someone else's mount, so then
    // the fd is left for fuse_session_destroy to close.
    if (!ours || dead) fuse_session_unmount(session_.get());
  }
  {
    std::lock_guard lock(state_mu_);
    finished_ = true;
  }
  finished_cv_.notify_all();
}

Server::~Server() {
  Unmount();
  // Handles whose RELEASE never came: the connection ended while files were open.
  for (Handle* h : handles_) delete h;
}

bool Server::WaitFinishedFor(std::chrono::steady_clock::duration d) {
  std::unique_lock lock(state_mu_);
  return finished_cv_.wait_for(lock, d, [this] { return finished_; });
}

void Server::DetachKernelMount() {
  auto m = FindMount(mountpoint_);
  if (!m) return;  // already unmounted (e.g. fusermount3 -u)
  const bool mine = have_dev_ ? (m->dev_major == dev_major_ && m->dev_minor == dev_minor_)
                              : m->fstype == "fuse.ipfly";
  if (!mine) return;  // someone mounted over it; leave theirs alone
  if (Status s = LazyUnmount(mountpoint_); !s.ok()) {
    IPFLY_LOG_WARN("fuse: unmounting {}: {}", mountpoint_, s.error().ToString());
  }
}

void Server::Unmount() {
  std::lock_guard lock(unmount_mu_);
  if (!unmount_started_ && loop_thread_.joinable()) {
    unmount_started_ = true;
    unmount_requested_ = true;
    // Workers check the exit flag only after a request; the lazy unmount below makes the
    // kernel end the connection (ENODEV in every worker) as soon as nothing uses the mount.
    fuse_session_exit(session_.get());
    DetachKernelMount();
    if (!WaitFinishedFor(kUnmountGrace) && have_dev_) {
      IPFLY_LOG_WARN("fuse: {} still in use {} ms after unmount; aborting its connection",
                     mountpoint_,
                     std::chrono::duration_cast<std::chrono::milliseconds>(kUnmountGrace).count());
      if (Status s = AbortFuseConnection(dev_major_, dev_minor_); !s.ok()) {
        IPFLY_LOG_WARN("fuse: aborting {}: {}", mountpoint_, s.error().ToString());
      }
    }
  }
  // Joining waits for requests still inside a FileTree (they are bounded by the tree's deadlines).
  if (loop_thread_.joinable()) loop_thread_.join();
}

void Server::Wait() {
  std::unique_lock lock(state_mu_);
  finished_cv_.wait(lock, [this] { return finished_; });
}

}  // namespace

// ---------------------------------------------------------------------------------------------

struct FuseFs::Impl {
  std::unique_ptr<Server> server;
};

FuseFs::FuseFs(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FuseFs::~FuseFs() {
  if (impl_) impl_->server->Unmount();
}

namespace {

// Undoes the octal escapes of /proc/self/mountinfo paths (\040 for a space, ...).
std::string UnescapeMountPath(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out.push_back(static_cast<char>(std::stoi(s.substr(i + 1, 3), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// The kernel caps a FUSE mount's readahead at 128 KiB through the INIT handshake, and only the
// bdi's sysfs knob can raise it. Sequential reads of large files then travel in 1 MiB requests
// instead of 128 KiB ones (3x the warm throughput here). Needs root; failure only costs speed.
void SetReadAhead(const std::string& mountpoint, unsigned kb) {
  std::ifstream in("/proc/self/mountinfo");
  std::string line, dev;
  while (std::getline(in, line)) {
    std::istringstream f(line);
    std::string id, parent, majmin, root, mnt;
    if (!(f >> id >> parent >> majmin >> root >> mnt)) continue;
    if (UnescapeMountPath(mnt) == mountpoint) dev = majmin;  // the last one is on top
  }
  if (dev.empty()) return;
  std::ofstream ra("/sys/class/bdi/" + dev + "/read_ahead_kb");
  ra << kb;
  ra.flush();
  if (!ra) {
    IPFLY_LOG_DEBUG("fuse: cannot set read_ahead_kb of {} ({})", mountpoint, dev);
  }
}

}  // namespace

Result<std::unique_ptr<FuseFs>> FuseFs::Mount(const FuseOptions& options) {
  if (options.mountpoint.empty()) return InvalidArgument("empty mountpoint");
  std::string path;
  try {
    namespace fs = std::filesystem;
    fs::path p = fs::absolute(options.mountpoint).lexically_normal();
    IPFLY_RETURN_IF_ERROR(CleanStaleMount(p.string()));
    std::error_code ec;
    fs::create_directories(p, ec);
    if (ec) return IoError("creating mountpoint " + p.string() + ": " + ec.message());
    if (!fs::is_directory(p, ec)) return InvalidArgument(p.string() + " is not a directory");
    path = fs::canonical(p, ec).string();
    if (ec) return IoError("resolving mountpoint " + p.string() + ": " + ec.message());
  } catch (const std::exception& e) {
    return IoError(std::string("preparing mountpoint: ") + e.what());
  }
  auto impl = std::make_unique<Impl>();
  impl->server = std::make_unique<Server>(options, path);
  IPFLY_RETURN_IF_ERROR(impl->server->Start());
  if (options.read_ahead_kb > 0) {
    // The kernel applies the INIT reply (which sets readahead to at most 128 KiB) when it gets
    // it; a first request answered means INIT is done, so the sysfs value sticks.
    struct stat st {};
    (void)::stat(path.c_str(), &st);
    SetReadAhead(path, options.read_ahead_kb);
  }
  IPFLY_LOG_INFO("fuse: mounted {} ({} worker threads)", path, options.threads);
  return std::unique_ptr<FuseFs>(new FuseFs(std::move(impl)));
}

Status FuseFs::Attach(const std::string& name, std::shared_ptr<FileTree> tree) {
  return impl_->server->Attach(name, std::move(tree));
}
Status FuseFs::Detach(const std::string& name) { return impl_->server->Detach(name); }
std::vector<std::string> FuseFs::Attached() const { return impl_->server->Attached(); }
const std::string& FuseFs::mountpoint() const { return impl_->server->mountpoint(); }
void FuseFs::Unmount() { impl_->server->Unmount(); }
void FuseFs::Wait() { impl_->server->Wait(); }

Status FuseFs::CleanStaleMount(const std::string& path) {
  // Mounts can be stacked (several crashes in a row); peel them off one at a time.
  for (int i = 0; i < 16 && IsStaleMount(path); ++i) {
    IPFLY_LOG_WARN("fuse: cleaning stale mount at {}", path);
    IPFLY_RETURN_IF_ERROR(LazyUnmount(path));
  }
  if (IsStaleMount(path)) return IoError("stale mount at " + path + " does not go away");
  return OkStatus();
}

}  // namespace ipfly::fusefs
