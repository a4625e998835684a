#include "ipfs_fetch/unixfs_reader.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <unordered_set>
#include <utility>
#include <vector>

#include "core/base/log.h"
#include "core/codec/dagpb.h"
#include "core/codec/unixfs_pb.h"

namespace ipfly::fetch {
namespace {

// Far deeper than any real file (a balanced Kubo DAG of 1 TiB has depth 3); the limit only stops
// hostile DAGs from recursing without end.
constexpr uint32_t kMaxDepth = 32;

const char* TypeName(codec::UnixfsType t) {
  switch (t) {
    case codec::UnixfsType::kRaw:
      return "Raw";
    case codec::UnixfsType::kDirectory:
      return "Directory";
    case codec::UnixfsType::kFile:
      return "File";
    case codec::UnixfsType::kMetadata:
      return "Metadata";
    case codec::UnixfsType::kSymlink:
      return "Symlink";
    case codec::UnixfsType::kHamtShard:
      return "HAMTShard";
  }
  return "unknown";
}

}  // namespace

namespace internal {

// A decoded, structurally validated file node. Context checks (size expected by the parent,
// depth) are made at each use, so one cached node serves every position it appears at.
struct FileNode {
  uint64_t filesize = 0;
  // Bytes held by the node itself: the whole block for raw leaves (shared, not copied), Data.Data
  // for dag-pb nodes. They come first, before the children.
  std::shared_ptr<const Bytes> raw;
  Bytes inline_data;
  std::vector<mf::Cid> children;
  std::vector<uint64_t> blocksizes;

  ByteView payload() const {
    return raw ? ByteView(raw->data(), raw->size()) : ByteView(inline_data);
  }
  bool leaf() const { return children.empty(); }
  size_t memory() const {
    return sizeof(FileNode) + (raw ? raw->size() : 0) + inline_data.size() +
           children.size() * (sizeof(mf::Cid) + 40) + blocksizes.size() * sizeof(uint64_t);
  }
};

}  // namespace internal

// One step of the ordered walk: bytes to emit (owner != null, cid unset) or a node to resolve.
struct UnixfsReader::Item {
  NodePtr owner;  // keeps `bytes` alive
  ByteView bytes;

  std::optional<mf::Cid> cid;
  uint64_t off = 0;                  // first wanted byte, in the node's own file coordinates
  uint64_t len = 0;                  // wanted length (may exceed the node; clamped on expansion)
  std::optional<uint64_t> expected;  // parent's blocksize; absent for the root
  uint32_t depth = 0;
  NodePtr node;  // resolved already (node cache)
  std::optional<std::future<Result<Block>>> fut;
};

namespace {

using internal::FileNode;
using NodePtr = std::shared_ptr<const FileNode>;

}  // namespace

// ---------------------------------------------------------------------------------------------
// StreamFeed: runs BlockSource::StreamDag on a helper thread and stages its blocks for the walk.

class UnixfsReader::StreamFeed {
 public:
  StreamFeed(BlockSource* source, const mf::Cid& root, EntityRange range, Deadline deadline,
             uint64_t cap_bytes)
      : cap_bytes_(cap_bytes) {
    thread_ = std::thread([this, source, root, range, deadline] {
      ReadRootScope scope(root);
      Status st =
          source->StreamDag(root, range, deadline, [this](const Block& b) { return OnBlock(b); });
      std::lock_guard lk(mu_);
      done_ = true;
      result_ = std::move(st);
      cv_.notify_all();
    });
  }

  ~StreamFeed() {
    Cancel();
    thread_.join();
  }

  // True while the stream may still deliver blocks.
  bool active() const {
    std::lock_guard lk(mu_);
    return !done_ && !cancel_;
  }

  // The block `cid` from the stream, waiting for it while the stream runs; nullopt when the
  // stream will not deliver it (ended, failed, skipped it as a duplicate, or clogged with blocks
  // the walk does not want), or at the deadline. The caller then uses Get.
  std::optional<Block> Take(const mf::Cid& cid, Deadline deadline) {
    const size_t h = std::hash<mf::Cid>()(cid);
    std::unique_lock lk(mu_);
    for (;;) {
      auto it = staged_.find(cid);
      if (it != staged_.end()) {
        Block b = std::move(it->second);
        staged_bytes_ -= b.size();
        staged_.erase(it);
        consumed_.insert(h);
        cv_.notify_all();  // the producer may be waiting for room
        return b;
      }
      if (done_ || cancel_) return std::nullopt;
      // Already delivered once (the walk needs the same block twice, the stream sent it once).
      if (consumed_.count(h)) return std::nullopt;
      if (producer_waiting_) {
        // Staging is full and what we need is not in it: the stream is sending blocks we do not
        // want (another range, a different DAG order). Stop it and fetch the rest one by one.
        IPFLY_LOG_DEBUG("unixfs reader: stream staging full without {}, abandoning the stream",
                        cid.ToString());
        cancel_ = true;
        cv_.notify_all();
        return std::nullopt;
      }
      if (cv_.wait_until(lk, deadline) == std::cv_status::timeout) return std::nullopt;
    }
  }

  // True if `cid` has arrived and waits in the staging map.
  bool IsStaged(const mf::Cid& cid) const {
    std::lock_guard lk(mu_);
    return staged_.count(cid) != 0;
  }

  // The walk got `cid` elsewhere (node cache): drop a staged copy and ignore later arrivals.
  void MarkConsumed(const mf::Cid& cid) {
    std::lock_guard lk(mu_);
    auto it = staged_.find(cid);
    if (it != staged_.end()) {
      staged_bytes_ -= it->second.size();
      staged_.erase(it);
      cv_.notify_all();
    }
    consumed_.insert(std::hash<mf::Cid>()(cid));
  }

  // Stops consuming: the producer's next on_block fails with kCancelled, staged blocks are freed.
  void Cancel() {
    std::lock_guard lk(mu_);
    cancel_ = true;
    staged_.clear();
    staged_bytes_ = 0;
    cv_.notify_all();
  }

  // True once StreamDag has returned (joining is then immediate).
  bool finished() const {
    std::lock_guard lk(mu_);
    return done_;
  }

  // The stream's own result once it ended (for logs).
  std::optional<Status> result() const {
    std::lock_guard lk(mu_);
    if (!done_) return std::nullopt;
    return result_;
  }

 private:
  Status OnBlock(const Block& b) {
    std::unique_lock lk(mu_);
    if (cancel_) return Error(Errc::kCancelled, "reader stopped consuming the stream");
    if (consumed_.count(std::hash<mf::Cid>()(b.cid())) || staged_.count(b.cid())) {
      return OkStatus();
    }
    // Backpressure: wait for room, but always admit one block into an empty map so a block
    // larger than the cap cannot wedge the stream.
    while (!cancel_ && !staged_.empty() && staged_bytes_ + b.size() > cap_bytes_) {
      producer_waiting_ = true;
      cv_.notify_all();
      cv_.wait(lk);
    }
    producer_waiting_ = false;
    if (cancel_) return Error(Errc::kCancelled, "reader stopped consuming the stream");
    staged_bytes_ += b.size();
    staged_.emplace(b.cid(), b);
    cv_.notify_all();
    return OkStatus();
  }

  const uint64_t cap_bytes_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::unordered_map<mf::Cid, Block> staged_;
  uint64_t staged_bytes_ = 0;
  // Hashes of CIDs the walk has used. A hash collision only costs a Get.
  std::unordered_set<size_t> consumed_;
  bool producer_waiting_ = false;
  bool cancel_ = false;
  bool done_ = false;
  Status result_;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------

namespace {

// Decodes and validates a block as a UnixFS file node. `is_root` only selects the error code for
// non-file content: the caller asked for something that is not a file (kInvalidArgument) versus a
// file DAG that links to non-file content (kCorrupt).
Result<NodePtr> DecodeNode(const Block& block, bool is_root) {
  const mf::Cid& cid = block.cid();
  auto node = std::make_shared<FileNode>();
  auto not_file = [&](const std::string& what) -> Error {
    if (is_root) return InvalidArgument(cid.ToString() + " is not a file: " + what);
    return Corrupt("corrupt DAG: file chunk " + cid.ToString() + " is " + what);
  };
  if (cid.codec() == mf::kCodecRaw) {
    node->raw = block.shared_data();
    node->filesize = block.size();
    return NodePtr(std::move(node));
  }
  if (cid.codec() != mf::kCodecDagPb) {
    return not_file("a " + mf::CodecName(cid.codec()) + " block");
  }
  auto pb = codec::DecodeDagPb(block.data());
  if (!pb.ok())
    return Corrupt("corrupt DAG: block " + cid.ToString() + ": " + pb.error().message());
  if (!pb->data) return not_file("a dag-pb node without UnixFS data");
  auto fs = codec::DecodeUnixfs(*pb->data);
  if (!fs.ok()) {
    return Corrupt("corrupt DAG: block " + cid.ToString() +
                   ": bad UnixFS data: " + fs.error().message());
  }
  if (fs->type != codec::UnixfsType::kFile && fs->type != codec::UnixfsType::kRaw) {
    return not_file(std::string("a UnixFS ") + TypeName(fs->type));
  }
  if (pb->links.size() != fs->blocksizes.size()) {
    return Corrupt("corrupt DAG: node " + cid.ToString() + " has " +
                   std::to_string(pb->links.size()) + " links but " +
                   std::to_string(fs->blocksizes.size()) + " blocksizes");
  }
  uint64_t total = fs->data ? fs->data->size() : 0;
  for (uint64_t bs : fs->blocksizes) {
    if (bs > UINT64_MAX - total) {
      return Corrupt("corrupt DAG: node " + cid.ToString() + ": blocksizes overflow");
    }
    total += bs;
  }
  const uint64_t filesize = fs->filesize.value_or(0);
  if (filesize != total) {
    return Corrupt("corrupt DAG: node " + cid.ToString() + " has filesize " +
                   std::to_string(filesize) + " but its data and blocksizes add up to " +
                   std::to_string(total));
  }
  node->children.reserve(pb->links.size());
  for (size_t i = 0; i < pb->links.size(); ++i) {
    const auto& l = pb->links[i];
    if (l.name && !l.name->empty()) {
      return Corrupt("corrupt DAG: chunk link " + std::to_string(i) + " of " + cid.ToString() +
                     " has a name (\"" + *l.name + "\")");
    }
    node->children.push_back(l.hash);
  }
  node->blocksizes = std::move(fs->blocksizes);
  if (fs->data) node->inline_data = std::move(*fs->data);
  node->filesize = filesize;
  return NodePtr(std::move(node));
}

// Checks a node against its position in the walk.
Status CheckPlace(const FileNode& node, const mf::Cid& cid, const std::optional<uint64_t>& expected,
                  uint32_t depth) {
  if (depth > kMaxDepth) {
    return Corrupt("corrupt DAG: " + cid.ToString() + " is nested deeper than " +
                   std::to_string(kMaxDepth) + " levels");
  }
  if (expected && *expected != node.filesize) {
    return Corrupt("corrupt DAG: block " + cid.ToString() + " holds " +
                   std::to_string(node.filesize) + " bytes of the file but its parent says " +
                   std::to_string(*expected));
  }
  return OkStatus();
}

}  // namespace

UnixfsReaderOptions UnixfsReaderOptions::FromConfig(const FetchConfig& config) {
  UnixfsReaderOptions o;
  o.max_inflight = std::max<uint32_t>(1, config.max_inflight);
  o.readahead_blocks = std::max<uint32_t>(1, config.readahead_blocks);
  o.stream_block_timeout_ms = std::max<uint32_t>(1, config.block_timeout_ms);
  return o;
}

UnixfsReader::UnixfsReader(BlockSource* source, UnixfsReaderOptions options)
    : source_(source), options_(std::move(options)) {
  if (options_.pool) {
    pool_ = options_.pool;
  } else {
    owned_pool_ = std::make_unique<ThreadPool>(std::max<uint32_t>(1, options_.max_inflight));
    pool_ = owned_pool_.get();
  }
}

UnixfsReader::~UnixfsReader() { ReapFeeds(/*all=*/true); }

UnixfsReader::NodePtr UnixfsReader::CacheLookup(const mf::Cid& cid) {
  std::lock_guard lk(cache_mu_);
  auto it = cache_index_.find(cid);
  if (it == cache_index_.end()) return nullptr;
  lru_.splice(lru_.begin(), lru_, it->second);
  node_cache_hits_.fetch_add(1, std::memory_order_relaxed);
  return it->second->second;
}

void UnixfsReader::CacheInsert(const mf::Cid& cid, const NodePtr& node) {
  const uint64_t mem = node->memory();
  if (mem > options_.node_cache_bytes / 4) return;  // one node must not flush the whole cache
  std::lock_guard lk(cache_mu_);
  if (cache_index_.count(cid)) return;
  lru_.emplace_front(cid, node);
  cache_index_.emplace(cid, lru_.begin());
  cache_bytes_ += mem;
  while (cache_bytes_ > options_.node_cache_bytes && !lru_.empty()) {
    cache_bytes_ -= lru_.back().second->memory();
    cache_index_.erase(lru_.back().first);
    lru_.pop_back();
  }
}

Result<UnixfsReader::NodePtr> UnixfsReader::ResolveRoot(const mf::Cid& root, Deadline deadline) {
  if (NodePtr n = CacheLookup(root)) return n;
  ReadRootScope scope(root);
  auto block = source_->Get(root, deadline);
  if (!block.ok()) return std::move(block).error().With("reading " + root.ToString());
  blocks_fetched_.fetch_add(1, std::memory_order_relaxed);
  NodePtr n = IPFLY_TRY(DecodeNode(*block, /*is_root=*/true));
  CacheInsert(root, n);
  return n;
}

Result<uint64_t> UnixfsReader::Size(const mf::Cid& root, Deadline deadline) {
  NodePtr n = IPFLY_TRY(ResolveRoot(root, deadline));
  return n->filesize;
}

Result<size_t> UnixfsReader::ReadAt(const mf::Cid& root, uint64_t offset, MutableByteView out,
                                    Deadline deadline) {
  size_t done = 0;
  if (out.empty()) {
    IPFLY_TRY(ResolveRoot(root, deadline));
    return size_t{0};
  }
  auto sink = [&](ByteView b) -> Status {
    if (b.size() > out.size() - done) return Internal("unixfs reader produced too many bytes");
    std::copy(b.begin(), b.end(), out.begin() + static_cast<ptrdiff_t>(done));
    done += b.size();
    return OkStatus();
  };
  IPFLY_RETURN_IF_ERROR(Walk(root, offset, out.size(), std::max<uint32_t>(1, options_.max_inflight),
                             nullptr, sink, deadline));
  return done;
}

Status UnixfsReader::Stream(const mf::Cid& root, uint64_t offset, uint64_t length,
                            const std::function<Status(ByteView)>& sink, Deadline deadline) {
  if (length == 0) {
    auto r = ResolveRoot(root, deadline);
    if (!r.ok()) return std::move(r).error();
    return OkStatus();
  }
  ReapFeeds(/*all=*/false);
  std::unique_ptr<StreamFeed> feed;
  if (options_.use_stream_dag) {
    EntityRange range;
    range.from = offset;
    range.to = (length > UINT64_MAX - offset || offset + length == 0) ? EntityRange::kToEnd
                                                                      : offset + length - 1;
    feed =
        std::make_unique<StreamFeed>(source_, root, range, deadline, options_.stream_staging_bytes);
  }
  Status st = Walk(root, offset, length, std::max<uint32_t>(1, options_.readahead_blocks),
                   feed.get(), sink, deadline);
  if (feed) {
    feed->Cancel();
    auto fr = feed->result();
    if (fr && !fr->ok() && fr->error().code() != Errc::kUnsupported &&
        fr->error().code() != Errc::kCancelled) {
      stream_fallbacks_.fetch_add(1, std::memory_order_relaxed);
      IPFLY_LOG_DEBUG("unixfs reader: stream of {} ended early ({}); completed block by block",
                      root.ToString(), fr->error().ToString());
    }
    if (!feed->finished()) {
      // The source has not noticed the cancellation yet (e.g. blocked on a silent connection).
      // Keep the feed (and its thread) until it ends rather than making the caller wait.
      std::lock_guard lk(feeds_mu_);
      lingering_.push_back(std::move(feed));
    }
  }
  return st;
}

void UnixfsReader::ReapFeeds(bool all) {
  std::vector<std::unique_ptr<StreamFeed>> done;
  {
    std::lock_guard lk(feeds_mu_);
    for (auto it = lingering_.begin(); it != lingering_.end();) {
      if (all || (*it)->finished()) {
        done.push_back(std::move(*it));
        it = lingering_.erase(it);
      } else {
        ++it;
      }
    }
  }
  done.clear();  // joins, outside the lock
}

Status UnixfsReader::Walk(const mf::Cid& root, uint64_t offset, uint64_t length, size_t window,
                          StreamFeed* feed, const std::function<Status(ByteView)>& sink,
                          Deadline deadline) {
  const std::string ctx = "reading " + root.ToString();
  ReadRootScope root_scope(root);  // for the Gets made on this thread
  std::deque<Item> queue;
  {
    Item first;
    first.cid = root;
    first.off = offset;
    first.len = length;
    queue.push_back(std::move(first));
  }
  BlockSource* const src = source_;

  // Starts background fetches for unresolved nodes among the first `window` items. The front
  // item is left alone: the caller's thread fetches it directly, which saves a thread hop for
  // the common single-block FUSE read.
  auto start_fetches = [&]() {
    size_t pos = 0;
    for (auto& it : queue) {
      if (pos++ >= window) break;
      if (pos == 1 || !it.cid || it.node || it.fut) continue;
      if (NodePtr n = CacheLookup(*it.cid)) {
        it.node = std::move(n);
        if (feed) feed->MarkConsumed(*it.cid);
        continue;
      }
      // Delivered by a stream that has ended since: take it from staging, not from the network.
      if (feed && feed->IsStaged(*it.cid)) continue;
      it.fut = pool_->Submit([src, cid = *it.cid, root, deadline] {
        ReadRootScope scope(root);
        return src->Get(cid, deadline);
      });
    }
  };

  while (!queue.empty()) {
    const bool streaming = feed && feed->active();
    if (!streaming) start_fetches();
    Item item = std::move(queue.front());
    queue.pop_front();

    if (!item.cid) {
      IPFLY_RETURN_IF_ERROR(sink(item.bytes));
      continue;
    }
    const mf::Cid& cid = *item.cid;
    const bool is_root = item.depth == 0;

    NodePtr node = std::move(item.node);
    if (!node) node = CacheLookup(cid);
    if (node && feed) feed->MarkConsumed(cid);
    if (!node) {
      std::optional<Result<Block>> got;
      // A staged block wins over everything (it is here already); while the stream runs, Take
      // waits for the block to arrive.
      if (feed) {
        // Patience per block: a stream that stops delivering (a stalled connection) must not
        // hold the walk until the stall timeout or the deadline; give up on it and use Get.
        const Deadline patience = std::min(
            deadline, Clock::now() + std::chrono::milliseconds(options_.stream_block_timeout_ms));
        if (auto b = feed->Take(cid, patience)) {
          got.emplace(std::move(*b));
          blocks_streamed_.fetch_add(1, std::memory_order_relaxed);
        } else if (feed->active() && Clock::now() < deadline) {
          IPFLY_LOG_DEBUG("{}: stream delivered nothing for {} ms, fetching block by block", ctx,
                          options_.stream_block_timeout_ms);
          feed->Cancel();
          stream_fallbacks_.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (!got && item.fut) {
        if (item.fut->wait_until(deadline) != std::future_status::ready) {
          return Timeout(ctx + ": deadline passed waiting for block " + cid.ToString());
        }
        got.emplace(item.fut->get());
        blocks_fetched_.fetch_add(1, std::memory_order_relaxed);
      }
      if (!got) {
        if (Clock::now() >= deadline) {
          return Timeout(ctx + ": deadline passed before block " + cid.ToString());
        }
        got.emplace(src->Get(cid, deadline));
        blocks_fetched_.fetch_add(1, std::memory_order_relaxed);
      }
      if (!got->ok()) return std::move(*got).error().With(ctx);
      node = IPFLY_TRY(DecodeNode(**got, is_root));
      if (!node->leaf() || is_root) CacheInsert(cid, node);
    }
    IPFLY_RETURN_IF_ERROR(CheckPlace(*node, cid, item.expected, item.depth));

    // Clamp the wanted range to this node.
    if (item.off >= node->filesize) continue;
    const uint64_t end = item.off + std::min(item.len, node->filesize - item.off);
    const ByteView payload = node->payload();

    if (node->leaf()) {
      // payload.size() == filesize here (DecodeNode checked it for dag-pb; raw by definition).
      IPFLY_RETURN_IF_ERROR(sink(payload.subspan(item.off, end - item.off)));
      continue;
    }
    // Internal node: its own bytes first, then the children overlapping [off, end), inserted at
    // the front of the queue in order (they precede everything already queued).
    if (item.depth + 1 > kMaxDepth) {  // refuse before fetching anything deeper
      return Corrupt("corrupt DAG: " + cid.ToString() + " has children deeper than " +
                     std::to_string(kMaxDepth) + " levels");
    }
    std::vector<Item> next;
    if (item.off < payload.size()) {
      Item inl;
      inl.owner = node;
      const uint64_t stop = std::min<uint64_t>(end, payload.size());
      inl.bytes = payload.subspan(item.off, stop - item.off);
      next.push_back(std::move(inl));
    }
    uint64_t pos = payload.size();
    for (size_t i = 0; i < node->children.size() && pos < end; ++i) {
      const uint64_t cs = pos, ce = pos + node->blocksizes[i];
      pos = ce;
      if (ce <= item.off || node->blocksizes[i] == 0) continue;
      Item child;
      child.cid = node->children[i];
      child.off = std::max(item.off, cs) - cs;
      child.len = std::min(end, ce) - std::max(item.off, cs);
      child.expected = node->blocksizes[i];
      child.depth = item.depth + 1;
      next.push_back(std::move(child));
    }
    for (auto it = next.rbegin(); it != next.rend(); ++it) queue.push_front(std::move(*it));
  }
  return OkStatus();
}

UnixfsReaderStats UnixfsReader::stats() const {
  UnixfsReaderStats s;
  s.blocks_fetched = blocks_fetched_.load(std::memory_order_relaxed);
  s.blocks_streamed = blocks_streamed_.load(std::memory_order_relaxed);
  s.node_cache_hits = node_cache_hits_.load(std::memory_order_relaxed);
  s.stream_fallbacks = stream_fallbacks_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace ipfly::fetch
