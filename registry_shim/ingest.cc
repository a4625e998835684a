#include "registry_shim/ingest.h"

#include <fcntl.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "core/base/digest.h"
#include "core/base/fd.h"
#include "core/base/log.h"
#include "layer/layer_index.h"

namespace ipfly::registry {
namespace {

// gzip, zstd, or a POSIX/GNU tar header ("ustar" at offset 257).
bool LooksLikeLayer(ByteView head) {
  if (head.size() >= 2 && head[0] == 0x1f && head[1] == 0x8b) return true;
  if (head.size() >= 4 && head[0] == 0x28 && head[1] == 0xb5 && head[2] == 0x2f &&
      head[3] == 0xfd) {
    return true;
  }
  return head.size() >= 262 && std::memcmp(head.data() + 257, "ustar", 5) == 0;
}

// Runs a LayerIndexBuilder on its own thread, fed with shared chunks through a bounded queue, so
// that decompression and tar parsing overlap with the UnixFS import on the caller's thread.
class IndexWorker {
 public:
  IndexWorker() : thread_([this] { Loop(); }) {}
  ~IndexWorker() {
    Close();
    if (thread_.joinable()) thread_.join();
  }
  IndexWorker(const IndexWorker&) = delete;
  IndexWorker& operator=(const IndexWorker&) = delete;

  void Push(std::shared_ptr<const Bytes> chunk) {
    std::unique_lock lock(mu_);
    space_.wait(lock, [&] { return queue_.size() < kMaxQueued || failed_; });
    if (failed_) return;  // the builder gave up: no point in feeding it
    queue_.push_back(std::move(chunk));
    ready_.notify_one();
  }
  // Ends the input and returns the builder's result.
  Result<layer::LayerIndex> Finish() {
    Close();
    thread_.join();
    if (!error_.ok()) return std::move(error_).error();
    return builder_.Finish();
  }

 private:
  static constexpr size_t kMaxQueued = 8;

  void Close() {
    std::lock_guard lock(mu_);
    closed_ = true;
    ready_.notify_one();
  }
  void Loop() {
    for (;;) {
      std::shared_ptr<const Bytes> chunk;
      {
        std::unique_lock lock(mu_);
        ready_.wait(lock, [&] { return !queue_.empty() || closed_; });
        if (queue_.empty()) return;
        chunk = std::move(queue_.front());
        queue_.pop_front();
        space_.notify_one();
      }
      if (Status st = builder_.Feed(ByteView(chunk->data(), chunk->size())); !st.ok()) {
        std::lock_guard lock(mu_);
        error_ = std::move(st);
        failed_ = true;
        queue_.clear();
        space_.notify_all();
        return;
      }
    }
  }

  layer::LayerIndexBuilder builder_;
  std::mutex mu_;
  std::condition_variable ready_, space_;
  std::deque<std::shared_ptr<const Bytes>> queue_;
  bool closed_ = false;
  bool failed_ = false;
  Status error_;
  std::thread thread_;  // last: started after everything it uses exists
};

}  // namespace

Result<IngestResult> IngestFile(const std::string& path, const unixfs::ImportProfile& profile,
                                BlockSink* sink) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.get() < 0) return ErrnoError("open " + path, errno);
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  unixfs::FileImporter imp(profile, sink);
  std::unique_ptr<IndexWorker> indexer;
  bool first = true;
  uint64_t total = 0;
  for (;;) {
    auto buf = std::make_shared<Bytes>(1 << 20);
    size_t fill = 0;
    while (fill < buf->size()) {
      ssize_t n = ::read(fd.get(), buf->data() + fill, buf->size() - fill);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoError("read " + path, errno);
      if (n == 0) break;
      fill += static_cast<size_t>(n);
    }
    if (fill == 0) break;
    buf->resize(fill);
    ByteView chunk(buf->data(), fill);
    if (first) {
      first = false;
      if (LooksLikeLayer(chunk)) indexer = std::make_unique<IndexWorker>();
    }
    total += fill;
    IPFLY_RETURN_IF_ERROR(imp.Write(chunk));
    if (indexer) indexer->Push(std::move(buf));
  }
  auto node = IPFLY_TRY(imp.Finish());
  IngestResult out;
  out.cid = node.cid.ToString();
  out.size = total;
  if (indexer) {
    auto idx = indexer->Finish();
    if (!idx.ok()) {
      IPFLY_LOG_INFO("no layer index for {}: {}", path, idx.error().ToString());
    } else {
      out.digest = idx->layer_digest ? idx->layer_digest->ToString() : "";
      idx->blob_cid = node.cid;
      Bytes encoded = idx->Encode();
      auto inode = unixfs::ImportBytes(encoded, profile, sink);
      if (!inode.ok()) return std::move(inode).error().With("store layer index");
      out.index_cid = inode->cid.ToString();
    }
  }
  return out;
}

Result<std::string> IngestBytes(ByteView data, const unixfs::ImportProfile& profile,
                                BlockSink* sink) {
  auto node = IPFLY_TRY(unixfs::ImportBytes(data, profile, sink));
  return node.cid.ToString();
}

}  // namespace ipfly::registry
