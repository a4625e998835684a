#include "layer/layer_reader.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <filesystem>
#include <list>
#include <map>
#include <mutex>
#include <shared_mutex>

#include "core/base/log.h"

namespace ipfly::layer {

namespace {

Status PreadAll(int fd, uint8_t* buf, size_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = ::pread(fd, buf, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("span cache read", errno);
    }
    if (n == 0) return IoError("span cache file is shorter than the layer");
    buf += n;
    off += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
  return OkStatus();
}

Status PwriteAll(int fd, const uint8_t* buf, size_t len, uint64_t off) {
  while (len > 0) {
    ssize_t n = ::pwrite(fd, buf, len, static_cast<off_t>(off));
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoError("span cache write", errno);
    }
    buf += n;
    off += static_cast<uint64_t>(n);
    len -= static_cast<size_t>(n);
  }
  return OkStatus();
}

// A reader-writer lock that prefers writers: a drop waiting for the lock is not starved by a
// steady stream of reads (glibc's default rwlock, behind std::shared_mutex, prefers readers).
// Not recursive: no thread takes it shared twice.
class WriterPreferringLock {
 public:
  WriterPreferringLock() {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&lock_, &attr);
    pthread_rwlockattr_destroy(&attr);
  }
  ~WriterPreferringLock() { pthread_rwlock_destroy(&lock_); }
  WriterPreferringLock(const WriterPreferringLock&) = delete;
  WriterPreferringLock& operator=(const WriterPreferringLock&) = delete;
  void lock() { pthread_rwlock_wrlock(&lock_); }
  void unlock() { pthread_rwlock_unlock(&lock_); }
  void lock_shared() { pthread_rwlock_rdlock(&lock_); }
  void unlock_shared() { pthread_rwlock_unlock(&lock_); }

 private:
  pthread_rwlock_t lock_;
};

}  // namespace

struct LayerReader::Impl {
  std::shared_ptr<const LayerIndex> index;
  std::unique_ptr<BlobSource> blob;
  LayerReaderOptions options;

  int data_fd = -1;  // sparse file of the uncompressed stream
  int map_fd = -1;   // one byte per span: 1 = present and verified

  // Lock order: io_mu before mu. Shared by preads of cached spans and by writes of new spans,
  // exclusive for DropSpanCache: no pread can see punched data, no write can be punched away
  // after its span is marked present.
  WriterPreferringLock io_mu;
  mutable std::mutex mu;
  std::condition_variable cv;
  std::atomic<int64_t> last_access_ns{0};  // steady clock
  std::vector<uint8_t> present;            // per span
  std::map<size_t, bool> in_flight;        // span -> being decompressed
  // Memory-only mode: span -> bytes, LRU order in `lru` (front = most recent).
  std::map<size_t, std::shared_ptr<const Bytes>> mem;
  std::list<size_t> lru;
  LayerReaderStats stats;

  ~Impl() {
    if (data_fd >= 0) ::close(data_fd);
    if (map_fd >= 0) ::close(map_fd);
  }

  Status OpenCache() {
    if (options.cache_dir.empty()) return OkStatus();
    std::error_code ec;
    std::filesystem::create_directories(options.cache_dir, ec);
    if (ec) return IoError("create span cache dir " + options.cache_dir + ": " + ec.message());
    std::string base = options.cache_dir + "/" +
                       (options.cache_name.empty() ? SpanCacheName(*index) : options.cache_name);
    data_fd = ::open((base + ".data").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (data_fd < 0) return ErrnoError("open span cache " + base + ".data", errno);
    map_fd = ::open((base + ".map").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (map_fd < 0) return ErrnoError("open span cache " + base + ".map", errno);
    struct stat st {};
    if (fstat(data_fd, &st) != 0) return ErrnoError("stat span cache", errno);
    if (static_cast<uint64_t>(st.st_size) != index->uncompressed_size) {
      // New or from another index build: start empty (sparse, no disk used yet).
      if (ftruncate(data_fd, 0) != 0 ||
          ftruncate(data_fd, static_cast<off_t>(index->uncompressed_size)) != 0 ||
          ftruncate(map_fd, 0) != 0) {
        return ErrnoError("size span cache", errno);
      }
    }
    present.assign(index->points.size(), 0);
    ssize_t n = ::pread(map_fd, present.data(), present.size(), 0);
    if (n < 0) return ErrnoError("read span map", errno);
    for (auto& p : present) p = p == 1 ? 1 : 0;
    for (size_t i = 0; i < present.size(); ++i) {
      if (!present[i]) continue;
      stats.spans_cached++;
      stats.cached_bytes += index->SpanEnd(i) - index->SpanStart(i);
    }
    return OkStatus();
  }

  Result<uint64_t> Drop() {
    if (data_fd < 0) {
      std::lock_guard lk(mu);
      mem.clear();
      lru.clear();
      return uint64_t{0};
    }
    std::unique_lock io(io_mu);
    uint64_t freed;
    {
      std::lock_guard lk(mu);
      freed = stats.cached_bytes;
      if (stats.spans_cached == 0) return uint64_t{0};
      std::fill(present.begin(), present.end(), 0);
      stats.spans_cached = 0;
      stats.cached_bytes = 0;
      ++stats.drops;
    }
    // The map is cleared durably before the data goes: a crash in between leaves unmapped data
    // (harmless), never mapped holes.
    if (::ftruncate(map_fd, 0) != 0 || ::fdatasync(map_fd) != 0) {
      return ErrnoError("clear span map", errno);
    }
    const auto size = static_cast<off_t>(index->uncompressed_size);
    if (::fallocate(data_fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, size) != 0) {
      if (errno != EOPNOTSUPP && errno != ENOSYS) return ErrnoError("punch span cache", errno);
      if (::ftruncate(data_fd, 0) != 0 || ::ftruncate(data_fd, size) != 0) {
        return ErrnoError("truncate span cache", errno);
      }
    }
    return freed;
  }

  // Readahead of the span cache file for sequential readers. FUSE splits a sequential read
  // into requests that several worker threads serve slightly out of order, so the kernel's own
  // readahead on the shared data fd often loses track and falls back to small synchronous
  // reads. When a cached read starts near where the previous one ended, the next
  // kCacheReadAhead bytes of the file are requested (POSIX_FADV_WILLNEED: asynchronous), once
  // per window. Holes (spans not cached) cost nothing. Called under the shared io lock.
  static constexpr uint64_t kCacheReadAhead = 8ull << 20;
  std::atomic<uint64_t> seq_next{0};  // end of the last cached read
  std::atomic<uint64_t> ra_until{0};  // the file is being read ahead up to here

  void ReadAheadCached(uint64_t off, uint64_t len) {
    const uint64_t end = off + len;
    const uint64_t prev = seq_next.exchange(end, std::memory_order_relaxed);
    constexpr uint64_t kNear = kCacheReadAhead / 2;
    if (off + kNear < prev || off > prev + kNear) return;  // not sequential
    uint64_t until = ra_until.load(std::memory_order_relaxed);
    // A window far from this read (the reader jumped) no longer helps: start a new one here.
    uint64_t from = (until < off || until > off + 2 * kCacheReadAhead) ? end : until;
    if (from >= off + kNear && from == until) return;  // still far enough ahead
    uint64_t to = std::min(end + kCacheReadAhead, index->uncompressed_size);
    if (to <= from) return;
    if (!ra_until.compare_exchange_strong(until, to, std::memory_order_relaxed)) return;
    ::posix_fadvise(data_fd, static_cast<off_t>(from), static_cast<off_t>(to - from),
                    POSIX_FADV_WILLNEED);
  }

  // Decompresses span `i`, checks its hash, stores it. Called without `mu` held.
  Result<std::shared_ptr<const Bytes>> Produce(size_t i, fetch::Deadline dl) {
    const LayerIndex& idx = *index;
    uint64_t start = idx.SpanStart(i), end = idx.SpanEnd(i);
    uint64_t hint = 0;
    if (i + 1 < idx.points.size()) hint = (idx.points[i + 1].compressed_bit_offset + 7) / 8;
    uint64_t read_bytes = 0;
    auto read = [&](uint64_t off, MutableByteView out) -> Result<size_t> {
      if (fetch::Clock::now() >= dl) return Timeout("layer read deadline passed");
      auto n = blob->ReadAt(off, out, dl);
      if (n.ok()) read_bytes += *n;
      return n;
    };
    auto data = DecompressRange(idx.compression, idx.points[i], start, end, read, hint);
    {
      std::lock_guard lk(mu);
      stats.compressed_bytes_read += read_bytes;
      uint64_t from = idx.points[i].compressed_bit_offset / 8;
      uint64_t to = hint ? hint : idx.compressed_size;
      stats.span_compressed_bytes += to > from ? to - from : 0;
    }
    if (!data.ok()) return std::move(data).error().With("span " + std::to_string(i));
    if (data->size() != end - start) {
      return Corrupt("span " + std::to_string(i) + ": decompressed " +
                     std::to_string(data->size()) + " bytes, expected " +
                     std::to_string(end - start));
    }
    if (i < idx.span_hashes.size()) {
      auto h = Sha256Of(*data);
      if (h != idx.span_hashes[i]) {
        return Corrupt("span " + std::to_string(i) + " of layer " +
                       (idx.layer_digest ? idx.layer_digest->ToString() : "?") +
                       " does not match its hash in the index");
      }
    }
    auto shared = std::make_shared<const Bytes>(std::move(*data));
    if (data_fd >= 0) {
      {
        // Shared with other writers and preads; a drop waits for it (and the span is marked
        // present before the drop can run, so the drop accounts for it).
        std::shared_lock io(io_mu);
        IPFLY_RETURN_IF_ERROR(PwriteAll(data_fd, shared->data(), shared->size(), start));
        // Data must be durable before the map says it is there.
        if (::fdatasync(data_fd) != 0) return ErrnoError("span cache sync", errno);
        uint8_t one = 1;
        IPFLY_RETURN_IF_ERROR(PwriteAll(map_fd, &one, 1, i));
        std::lock_guard lk(mu);
        if (!present[i]) {
          present[i] = 1;
          ++stats.spans_cached;
          stats.cached_bytes += shared->size();
        }
      }
      if (options.on_span_cached) options.on_span_cached(shared->size());
    }
    return shared;
  }

  // Copies [off, off + out.size()) ∩ span i into out (out starts at `off`).
  Status ReadSpan(size_t i, uint64_t off, MutableByteView out, fetch::Deadline dl) {
    uint64_t start = index->SpanStart(i);
    std::shared_ptr<const Bytes> bytes;
    for (;;) {
      // A cached span is read under the shared io lock, so a drop cannot punch it meanwhile.
      std::shared_lock io(io_mu, std::defer_lock);
      if (data_fd >= 0) io.lock();
      std::unique_lock lk(mu);
      if (data_fd >= 0 && present[i]) {
        ++stats.span_hits;
        lk.unlock();
        if (options.test_before_cached_pread) options.test_before_cached_pread();
        Status st = PreadAll(data_fd, out.data(), out.size(), off);
        if (st.ok()) ReadAheadCached(off, out.size());
        return st;
      }
      if (data_fd < 0) {
        auto it = mem.find(i);
        if (it != mem.end()) {
          ++stats.span_hits;
          lru.remove(i);
          lru.push_front(i);
          bytes = it->second;
          break;
        }
      }
      if (!in_flight.count(i)) {
        in_flight[i] = true;
        break;
      }
      // Never wait for another read's fetch while holding the io lock (a drop would wait too).
      if (io.owns_lock()) io.unlock();
      if (cv.wait_until(lk, dl) == std::cv_status::timeout) {
        return Timeout("waiting for span " + std::to_string(i) + " being fetched by another read");
      }
    }
    if (!bytes) {
      auto r = Produce(i, dl);
      std::lock_guard lk(mu);
      in_flight.erase(i);
      cv.notify_all();
      if (!r.ok()) return std::move(r).error();
      bytes = *r;
      ++stats.spans_decompressed;
      if (data_fd < 0) {
        mem[i] = bytes;
        lru.push_front(i);
        while (lru.size() > std::max<size_t>(1, options.memory_spans)) {
          mem.erase(lru.back());
          lru.pop_back();
        }
      }
    }
    std::memcpy(out.data(), bytes->data() + (off - start), out.size());
    return OkStatus();
  }
};

std::string SpanCacheName(const LayerIndex& index) {
  Sha256 h;
  auto put = [&h](uint64_t v) {
    uint8_t b[8];
    for (int k = 0; k < 8; ++k) b[k] = static_cast<uint8_t>(v >> (8 * k));
    h.Update(ByteView(b, sizeof b));
  };
  put(index.uncompressed_size);
  put(static_cast<uint64_t>(index.compression));
  for (const auto& p : index.points) put(p.uncompressed_offset);
  auto tag = h.Final();
  return (index.layer_digest ? index.layer_digest->hex() : std::string("unknown")) + "-" +
         HexEncode(ByteView(tag.data(), 8));
}

LayerReader::LayerReader(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
LayerReader::~LayerReader() = default;

Result<std::unique_ptr<LayerReader>> LayerReader::Open(std::shared_ptr<const LayerIndex> index,
                                                       std::unique_ptr<BlobSource> blob,
                                                       LayerReaderOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->index = std::move(index);
  impl->blob = std::move(blob);
  impl->options = std::move(options);
  impl->stats.spans_total = impl->index->points.size();
  impl->last_access_ns = std::chrono::steady_clock::now().time_since_epoch().count();
  if (impl->index->compression != Compression::kNone) IPFLY_RETURN_IF_ERROR(impl->OpenCache());
  return std::unique_ptr<LayerReader>(new LayerReader(std::move(impl)));
}

Result<size_t> LayerReader::Read(uint64_t offset, MutableByteView out, fetch::Deadline deadline) {
  const LayerIndex& idx = *impl_->index;
  impl_->last_access_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                              std::memory_order_relaxed);
  if (offset >= idx.uncompressed_size || out.empty()) return size_t{0};
  size_t len = static_cast<size_t>(std::min<uint64_t>(out.size(), idx.uncompressed_size - offset));
  if (idx.compression == Compression::kNone) {
    // Plain tar: the blob is the stream; blocks are verified by their CIDs on the way.
    size_t done = 0;
    while (done < len) {
      auto n = impl_->blob->ReadAt(offset + done, out.subspan(done, len - done), deadline);
      if (!n.ok()) return std::move(n).error();
      if (*n == 0) return Corrupt("layer blob is shorter than its index says");
      done += *n;
    }
    std::lock_guard lk(impl_->mu);
    impl_->stats.compressed_bytes_read += len;
    return len;
  }
  size_t done = 0;
  while (done < len) {
    uint64_t pos = offset + done;
    size_t i = idx.SpanOf(pos);
    uint64_t span_end = idx.SpanEnd(i);
    size_t n = static_cast<size_t>(std::min<uint64_t>(len - done, span_end - pos));
    if (n == 0) return Corrupt("layer index has an empty span at offset " + std::to_string(pos));
    IPFLY_RETURN_IF_ERROR(impl_->ReadSpan(i, pos, out.subspan(done, n), deadline));
    done += n;
  }
  return len;
}

Status LayerReader::WithCachedRange(uint64_t offset, uint64_t len,
                                    const std::function<Status(int fd, uint64_t offset)>& fn) {
  Impl& m = *impl_;
  const LayerIndex& idx = *m.index;
  if (m.data_fd < 0 || len == 0 || offset >= idx.uncompressed_size ||
      len > idx.uncompressed_size - offset) {
    return NotFound("range not in the span cache");
  }
  std::shared_lock io(m.io_mu);  // held until fn returns: a drop waits for it
  {
    std::lock_guard lk(m.mu);
    const size_t first = idx.SpanOf(offset), last = idx.SpanOf(offset + len - 1);
    for (size_t i = first; i <= last; ++i) {
      if (!m.present[i]) return NotFound("range not in the span cache");
    }
    m.stats.span_hits += last - first + 1;
  }
  m.last_access_ns.store(std::chrono::steady_clock::now().time_since_epoch().count(),
                         std::memory_order_relaxed);
  Status st = fn(m.data_fd, offset);
  if (st.ok()) m.ReadAheadCached(offset, len);
  return st;
}

const LayerIndex& LayerReader::index() const { return *impl_->index; }

LayerReaderStats LayerReader::stats() const {
  std::lock_guard lk(impl_->mu);
  return impl_->stats;
}

uint64_t LayerReader::SpanCacheBytes() const {
  std::lock_guard lk(impl_->mu);
  return impl_->stats.cached_bytes;
}

std::chrono::steady_clock::time_point LayerReader::LastAccess() const {
  return std::chrono::steady_clock::time_point(
      std::chrono::steady_clock::duration(impl_->last_access_ns.load(std::memory_order_relaxed)));
}

Result<uint64_t> LayerReader::DropSpanCache() { return impl_->Drop(); }

}  // namespace ipfly::layer
