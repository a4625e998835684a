#include "ipfs_fetch/fs_block_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <optional>
#include <utility>
#include <vector>

#include "core/base/fd.h"
#include "core/base/log.h"
#include "core/multiformats/multibase.h"

namespace ipfly::fetch {
namespace {

// Base32 names are [a-z2-7]; anything else in blocks/ is not ours.
bool IsBlockName(std::string_view name) {
  if (name.size() < 4) return false;
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'))) return false;
  }
  return true;
}

std::string ShardOf(const std::string& name) { return name.substr(name.size() - 3, 2); }

// Asks ext4 to spread the shard directories (and so the block files, whose inodes are allocated
// near their directory) over its block groups, as it does for top-level directories (chattr +T).
// Without it all new inodes of a store crowd into one group, and on ext4 without a journal each
// allocation there first skips every recently deleted inode of the group (recently_deleted()):
// after a cache was emptied, that made writing blocks the slowest stage of `ipfly get`. Best
// effort: other file systems ignore or refuse the flag, which changes nothing.
void MarkTopDir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return;
  int flags = 0;
  if (::ioctl(fd.get(), FS_IOC_GETFLAGS, &flags) != 0 || (flags & FS_TOPDIR_FL)) return;
  flags |= FS_TOPDIR_FL;
  (void)::ioctl(fd.get(), FS_IOC_SETFLAGS, &flags);
}

Status MakeDir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) == 0 || errno == EEXIST) return OkStatus();
  return ErrnoError("mkdir " + path, errno);
}

Result<Bytes> ReadWholeFile(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) {
    if (errno == ENOENT) return NotFound(path);
    return ErrnoError("open " + path, errno);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return ErrnoError("stat " + path, errno);
  // A block file can never legitimately exceed the block limit; read one byte more than the
  // limit at most so that a huge junk file costs nothing and is reported as corrupt.
  size_t want = std::min<uint64_t>(static_cast<uint64_t>(st.st_size), kMaxBlockSize + 1);
  Bytes data(want);
  size_t got = 0;
  while (got < want) {
    ssize_t n = ::pread(fd.get(), data.data() + got, want - got, static_cast<off_t>(got));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("read " + path, errno);
    }
    if (n == 0) break;  // file shrank under us; verification will catch it
    got += static_cast<size_t>(n);
  }
  data.resize(got);
  return data;
}

Status WriteAll(int fd, ByteView data, const std::string& path) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("write " + path, errno);
    }
    done += static_cast<size_t>(n);
  }
  return OkStatus();
}

Status FsyncDir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open " + path, errno);
  if (::fsync(fd.get()) != 0) return ErrnoError("fsync " + path, errno);
  return OkStatus();
}

// Lists directory entry names (without "." and ".."). kNotFound if the directory is missing.
Result<std::vector<std::string>> ListDir(const std::string& path) {
  DIR* d = ::opendir(path.c_str());
  if (!d) {
    if (errno == ENOENT) return NotFound(path);
    return ErrnoError("opendir " + path, errno);
  }
  std::vector<std::string> names;
  while (struct dirent* e = ::readdir(d)) {
    std::string_view n = e->d_name;
    if (n == "." || n == "..") continue;
    names.emplace_back(n);
  }
  ::closedir(d);
  return names;
}

}  // namespace

Result<Block> IdentityBlock(const mf::Cid& cid) {
  return Block::Verify(cid, cid.multihash().digest());
}

// ---------------------------------------------------------------------------------------------
// FsBlockStore

FsBlockStore::FsBlockStore(std::string dir, FsBlockStoreOptions options)
    : dir_(std::move(dir)),
      options_(std::move(options)),
      name_(options_.name.empty() ? "blockstore " + dir_ : options_.name) {}

FsBlockStore::~FsBlockStore() = default;

Result<std::unique_ptr<FsBlockStore>> FsBlockStore::Open(const std::string& dir,
                                                         FsBlockStoreOptions options) {
  if (dir.empty()) return InvalidArgument("block store directory is empty");
  std::string d = dir;
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  std::unique_ptr<FsBlockStore> store(new FsBlockStore(d, std::move(options)));
  IPFLY_RETURN_IF_ERROR(store->Init());
  return store;
}

Status FsBlockStore::Init() {
  // mkdir -p for the root (the default store dir may be several levels deep).
  for (size_t pos = 1; pos <= dir_.size(); ++pos) {
    if (pos == dir_.size() || dir_[pos] == '/') IPFLY_RETURN_IF_ERROR(MakeDir(dir_.substr(0, pos)));
  }
  IPFLY_RETURN_IF_ERROR(MakeDir(dir_ + "/blocks"));
  MarkTopDir(dir_ + "/blocks");
  IPFLY_RETURN_IF_ERROR(MakeDir(dir_ + "/tmp"));
  IPFLY_RETURN_IF_ERROR(CleanTmp());
  IPFLY_RETURN_IF_ERROR(Scan());
  std::lock_guard lk(mu_);
  EvictLocked();
  return OkStatus();
}

Status FsBlockStore::CleanTmp() {
  const std::string tmp = dir_ + "/tmp";
  auto names = IPFLY_TRY(ListDir(tmp));
  const time_t now = ::time(nullptr);
  const pid_t self = ::getpid();
  for (const auto& n : names) {
    std::string path = tmp + "/" + n;
    // Another live process sharing the directory may be writing its tmp files right now:
    // keep files of live pids unless they are clearly abandoned (a day old). Our own pid's files
    // are leftovers of an earlier process that had the same pid (this store has written none yet).
    bool remove = true;
    long pid = 0;
    if (std::sscanf(n.c_str(), "%ld.", &pid) == 1 && pid > 0 && pid != self) {
      bool alive = ::kill(static_cast<pid_t>(pid), 0) == 0 || errno == EPERM;
      struct stat st;
      bool fresh = ::lstat(path.c_str(), &st) == 0 && now - st.st_mtime < 24 * 3600;
      remove = !(alive && fresh);
    }
    if (!remove) continue;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      IPFLY_LOG_WARN("{}: cannot remove stale tmp file {}: {}", name_, path, std::strerror(errno));
    } else {
      IPFLY_LOG_DEBUG("{}: removed stale tmp file {}", name_, path);
    }
  }
  return OkStatus();
}

Status FsBlockStore::Scan() {
  struct Found {
    std::string key;
    uint64_t size;
    struct timespec mtime;
  };
  std::vector<Found> found;
  const std::string blocks = dir_ + "/blocks";
  auto shards = IPFLY_TRY(ListDir(blocks));
  for (const auto& shard : shards) {
    std::string sdir = blocks + "/" + shard;
    auto names = ListDir(sdir);
    if (!names.ok()) {
      if (names.error().code() == Errc::kNotFound) continue;
      return std::move(names).error();
    }
    for (auto& n : *names) {
      struct stat st;
      if (!IsBlockName(n) || ShardOf(n) != shard) continue;  // not ours; leave it alone
      if (::stat((sdir + "/" + n).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      found.push_back({std::move(n), static_cast<uint64_t>(st.st_size), st.st_mtim});
    }
    std::lock_guard lk(mu_);
    shards_made_.insert(shard);
  }
  // Oldest first, so that each insertion at the LRU front leaves the newest at the front.
  std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
    if (a.mtime.tv_sec != b.mtime.tv_sec) return a.mtime.tv_sec < b.mtime.tv_sec;
    return a.mtime.tv_nsec < b.mtime.tv_nsec;
  });
  std::lock_guard lk(mu_);
  for (const auto& f : found) IndexLocked(f.key, f.size);
  IPFLY_LOG_DEBUG("{}: opened with {} blocks, {} bytes", name_, index_.size(), bytes_);
  return OkStatus();
}

std::string FsBlockStore::BlockPath(const mf::Multihash& mh) const {
  std::string key = mf::Base32LowerEncode(mh.bytes());
  return dir_ + "/blocks/" + ShardOf(key) + "/" + key;
}

void FsBlockStore::AdoptLocked(const std::string& key, const std::string& path, uint64_t size) {
  // The file was seen or written without the lock; an eviction (which unlinks under the lock)
  // may have removed it since. Index only what is there now, so the index never names a file
  // that is gone.
  struct stat st;
  if (index_.count(key) || ::stat(path.c_str(), &st) == 0) IndexLocked(key, size);
}

void FsBlockStore::IndexLocked(const std::string& key, uint64_t size) {
  auto it = index_.find(key);
  if (it != index_.end()) {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
    bytes_ = bytes_ - it->second.size + size;
    it->second.size = size;
    return;
  }
  lru_.push_front(key);
  index_.emplace(key, Entry{size, lru_.begin()});
  bytes_ += size;
}

void FsBlockStore::UnindexLocked(const std::string& key) {
  auto it = index_.find(key);
  if (it == index_.end()) return;
  bytes_ -= it->second.size;
  lru_.erase(it->second.lru);
  index_.erase(it);
}

void FsBlockStore::EvictLocked() {
  if (options_.max_bytes == 0) return;
  // Unlinking under the lock keeps eviction and a concurrent Put of the same block from
  // racing (a Put re-indexes only after its rename, and the rename cannot be undone by an
  // eviction that picked the old entry). Evictions come in short bursts, so this is cheap.
  while (bytes_ > options_.max_bytes && !lru_.empty()) {
    std::string key = lru_.back();
    std::string path = dir_ + "/blocks/" + ShardOf(key) + "/" + key;
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      IPFLY_LOG_WARN("{}: evicting {}: {}", name_, path, std::strerror(errno));
    }
    UnindexLocked(key);
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
}

Status FsBlockStore::EnsureShardDir(const std::string& shard) {
  {
    std::lock_guard lk(mu_);
    if (shards_made_.count(shard)) return OkStatus();
  }
  IPFLY_RETURN_IF_ERROR(MakeDir(dir_ + "/blocks/" + shard));
  std::lock_guard lk(mu_);
  shards_made_.insert(shard);
  return OkStatus();
}

Result<Block> FsBlockStore::Get(const mf::Cid& cid, Deadline /*deadline*/) {
  if (cid.is_identity()) return IdentityBlock(cid);
  const std::string key = mf::Base32LowerEncode(cid.multihash().bytes());
  const std::string path = dir_ + "/blocks/" + ShardOf(key) + "/" + key;
  auto data = ReadWholeFile(path);
  if (!data.ok()) {
    if (data.error().code() == Errc::kNotFound) {
      // Possibly evicted by another process sharing the directory.
      std::lock_guard lk(mu_);
      UnindexLocked(key);
      misses_.fetch_add(1, std::memory_order_relaxed);
      return NotFound("block " + cid.ToString() + " not in " + name_);
    }
    return std::move(data).error().With(name_);
  }
  const uint64_t size = data->size();
  auto block = Block::Verify(cid, std::move(*data));
  if (!block.ok()) {
    // Disk corruption or a torn write: drop the file so that the next fetch replaces it.
    IPFLY_LOG_WARN("{}: block file {} failed verification, deleting it: {}", name_, path,
                   block.error().message());
    corrupt_.fetch_add(1, std::memory_order_relaxed);
    std::lock_guard lk(mu_);
    ::unlink(path.c_str());
    UnindexLocked(key);
    return Corrupt(name_ + ": stored copy of block " + cid.ToString() +
                   " failed verification and was deleted");
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  {
    std::lock_guard lk(mu_);
    AdoptLocked(key, path, size);  // also adopts blocks written by another process
    EvictLocked();
  }
  if (options_.max_bytes != 0) {
    // Keep the LRU order across restarts (Scan orders by mtime). Failure only degrades order.
    ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);
  }
  return std::move(block).value();
}

Status FsBlockStore::Put(const Block& block) {
  const mf::Cid& cid = block.cid();
  if (cid.is_identity()) return OkStatus();
  const std::string key = mf::Base32LowerEncode(cid.multihash().bytes());
  const std::string shard = ShardOf(key);
  const std::string path = dir_ + "/blocks/" + shard + "/" + key;
  {
    std::lock_guard lk(mu_);
    auto it = index_.find(key);
    if (it != index_.end()) {
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return OkStatus();
    }
  }
  // Another process may have written it; a stat is far cheaper than a rewrite.
  struct stat st;
  if (::stat(path.c_str(), &st) == 0 && static_cast<uint64_t>(st.st_size) == block.size()) {
    std::lock_guard lk(mu_);
    AdoptLocked(key, path, block.size());
    EvictLocked();
    return OkStatus();
  }
  IPFLY_RETURN_IF_ERROR(EnsureShardDir(shard));
  if (tmpfile_ok_.load(std::memory_order_relaxed)) {
    auto linked = PutTmpfile(block, shard, path);
    if (linked.ok() && *linked) {
      puts_.fetch_add(1, std::memory_order_relaxed);
      std::lock_guard lk(mu_);
      AdoptLocked(key, path, block.size());
      EvictLocked();
      return OkStatus();
    }
    if (!linked.ok()) return std::move(linked).error();
    // O_TMPFILE or linkat through /proc is not available here: use tmp + rename from now on.
    tmpfile_ok_.store(false, std::memory_order_relaxed);
  }

  const std::string tmp = dir_ + "/tmp/" + std::to_string(::getpid()) + "." +
                          std::to_string(tmp_counter_.fetch_add(1)) + ".tmp";
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (fd.get() < 0) return ErrnoError(name_ + ": create " + tmp, errno);
  Status st_write = WriteAll(fd.get(), block.data(), tmp);
  if (st_write.ok() && options_.fsync && ::fsync(fd.get()) != 0) {
    st_write = ErrnoError(name_ + ": fsync " + tmp, errno);
  }
  if (fd.Close() != 0 && st_write.ok()) st_write = ErrnoError(name_ + ": close " + tmp, errno);
  if (!st_write.ok()) {
    ::unlink(tmp.c_str());
    return st_write;
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    if (err == ENOENT) {
      // The shard directory vanished (someone cleaned the store by hand): recreate it once.
      std::lock_guard lk(mu_);
      shards_made_.erase(shard);
    }
    return ErrnoError(name_ + ": rename " + tmp + " -> " + path, err);
  }
  if (options_.fsync) {
    Status s = FsyncDir(dir_ + "/blocks/" + shard);
    if (!s.ok()) return s;
  }
  puts_.fetch_add(1, std::memory_order_relaxed);
  std::lock_guard lk(mu_);
  AdoptLocked(key, path, block.size());
  EvictLocked();
  return OkStatus();
}

// Writes the block as an unnamed file in its shard directory (O_TMPFILE) and links it under its
// name once complete: the name never shows a partial file, a crash leaves nothing behind to clean
// up, the inode is allocated next to its shard (see MarkTopDir), and no tmp directory entry is
// created and renamed. Returns false (nothing written) when the file system or the kernel cannot
// do it, so the caller falls back to tmp + rename.
Result<bool> FsBlockStore::PutTmpfile(const Block& block, const std::string& shard,
                                      const std::string& path) {
  const std::string shard_dir = dir_ + "/blocks/" + shard;
  UniqueFd fd(::open(shard_dir.c_str(), O_TMPFILE | O_WRONLY | O_CLOEXEC, 0644));
  if (fd.get() < 0) {
    if (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL) return false;
    if (errno == ENOENT) {  // the shard directory vanished: recreate it next time
      std::lock_guard lk(mu_);
      shards_made_.erase(shard);
    }
    return ErrnoError(name_ + ": create unnamed file in " + shard_dir, errno);
  }
  IPFLY_RETURN_IF_ERROR(WriteAll(fd.get(), block.data(), shard_dir + " (O_TMPFILE)"));
  if (options_.fsync && ::fsync(fd.get()) != 0) {
    return ErrnoError(name_ + ": fsync unnamed file in " + shard_dir, errno);
  }
  const std::string proc = "/proc/self/fd/" + std::to_string(fd.get());
  if (::linkat(AT_FDCWD, proc.c_str(), AT_FDCWD, path.c_str(), AT_SYMLINK_FOLLOW) != 0) {
    // Someone stored the same block meanwhile: content-addressed, so that is the same bytes
    // (and Get re-verifies anyway).
    if (errno == EEXIST) return true;
    if (errno == ENOENT && ::access("/proc/self/fd", F_OK) != 0) return false;  // no /proc
    return ErrnoError(name_ + ": link " + path, errno);
  }
  if (options_.fsync) IPFLY_RETURN_IF_ERROR(FsyncDir(shard_dir));
  return true;
}

Result<bool> FsBlockStore::Has(const mf::Cid& cid) {
  if (cid.is_identity()) return true;
  const std::string key = mf::Base32LowerEncode(cid.multihash().bytes());
  {
    std::lock_guard lk(mu_);
    if (index_.count(key)) return true;
  }
  struct stat st;
  const std::string path = dir_ + "/blocks/" + ShardOf(key) + "/" + key;
  if (::stat(path.c_str(), &st) == 0) {
    std::lock_guard lk(mu_);
    AdoptLocked(key, path, static_cast<uint64_t>(st.st_size));
    EvictLocked();
    return true;
  }
  if (errno == ENOENT) return false;
  return ErrnoError(name_ + ": stat " + path, errno);
}

Status FsBlockStore::Delete(const mf::Multihash& mh) {
  const std::string key = mf::Base32LowerEncode(mh.bytes());
  const std::string path = dir_ + "/blocks/" + ShardOf(key) + "/" + key;
  std::lock_guard lk(mu_);
  UnindexLocked(key);
  if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
    return ErrnoError(name_ + ": unlink " + path, errno);
  }
  return OkStatus();
}

BlockStoreStats FsBlockStore::stats() const {
  BlockStoreStats s;
  {
    std::lock_guard lk(mu_);
    s.bytes = bytes_;
    s.blocks = index_.size();
  }
  s.hits = hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  s.puts = puts_.load(std::memory_order_relaxed);
  s.evictions = evictions_.load(std::memory_order_relaxed);
  s.corrupt = corrupt_.load(std::memory_order_relaxed);
  return s;
}

// ---------------------------------------------------------------------------------------------
// MemoryBlockStore

Result<Block> MemoryBlockStore::Get(const mf::Cid& cid, Deadline /*deadline*/) {
  if (cid.is_identity()) return IdentityBlock(cid);
  std::optional<Block> found;
  {
    std::lock_guard lk(mu_);
    auto it = blocks_.find(cid.multihash());
    if (it != blocks_.end()) found = it->second;
  }
  if (!found) {
    misses_.fetch_add(1, std::memory_order_relaxed);
    return NotFound("block " + cid.ToString() + " not in " + name_);
  }
  hits_.fetch_add(1, std::memory_order_relaxed);
  if (found->cid() == cid) return *found;
  // Same bytes under another CID (v0/v1, raw/dag-pb): rebuild with the requested CID.
  return Block::Verify(cid, Bytes(found->data().begin(), found->data().end()));
}

Status MemoryBlockStore::Put(const Block& block) {
  if (block.cid().is_identity()) return OkStatus();
  std::lock_guard lk(mu_);
  auto [it, inserted] = blocks_.emplace(block.cid().multihash(), block);
  if (inserted) {
    bytes_ += block.size();
    puts_.fetch_add(1, std::memory_order_relaxed);
  }
  return OkStatus();
}

Result<bool> MemoryBlockStore::Has(const mf::Cid& cid) {
  if (cid.is_identity()) return true;
  std::lock_guard lk(mu_);
  return blocks_.count(cid.multihash()) != 0;
}

Status MemoryBlockStore::Delete(const mf::Multihash& mh) {
  std::lock_guard lk(mu_);
  auto it = blocks_.find(mh);
  if (it != blocks_.end()) {
    bytes_ -= it->second.size();
    blocks_.erase(it);
  }
  return OkStatus();
}

BlockStoreStats MemoryBlockStore::stats() const {
  BlockStoreStats s;
  {
    std::lock_guard lk(mu_);
    s.bytes = bytes_;
    s.blocks = blocks_.size();
  }
  s.hits = hits_.load(std::memory_order_relaxed);
  s.misses = misses_.load(std::memory_order_relaxed);
  s.puts = puts_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace ipfly::fetch
