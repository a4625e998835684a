#include "snapshotter/fuse_lazy_layers.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "core/base/digest.h"
#include "core/base/log.h"
#include "core/base/sha256.h"
#include "core/multiformats/cid.h"
#include "core/unixfs/importer.h"
#include "fusefs/fuse_fs.h"
#include "fusefs/layer_tree.h"
#include "ipfs_fetch/fetcher.h"
#include "ipfs_fetch/http_client.h"
#include "ipfs_fetch/make_fetcher.h"
#include "ipfs_fetch/unixfs_reader.h"
#include "layer/layer_index.h"
#include "layer/layer_reader.h"

namespace ipfly::snapshotter {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr std::string_view kIpflyCidLabel = "containerd.io/snapshot/ipfly.cid";
constexpr std::string_view kIpflyIndexLabel = "containerd.io/snapshot/ipfly.index";
constexpr std::string_view kRemoteUrlsLabel = "containerd.io/snapshot/remote/urls";
constexpr std::string_view kCriDigestLabel = "containerd.io/snapshot/cri.layer-digest";
constexpr std::string_view kStargzDigestLabel = "containerd.io/snapshot/remote/stargz.digest";
constexpr uint64_t kMaxIndexBytes = 256ull << 20;
// The span cache cap is checked after every span written (a counter compare) and at this period.
constexpr auto kEvictPeriod = std::chrono::seconds(30);

std::string LabelOr(const Labels& labels, std::string_view key) {
  auto it = labels.find(std::string(key));
  return it == labels.end() ? std::string() : it->second;
}

// Latency histogram of on-demand blob reads (seconds), Prometheus style cumulative buckets.
class LatencyHistogram {
 public:
  static constexpr double kBounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1,
                                       0.25,  0.5,   1,    2.5,   5,    10};
  void Observe(double s) {
    for (size_t i = 0; i < std::size(kBounds); ++i) {
      if (s <= kBounds[i]) counts_[i].fetch_add(1, std::memory_order_relaxed);
    }
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_us_.fetch_add(static_cast<uint64_t>(s * 1e6), std::memory_order_relaxed);
  }
  std::string Text(const std::string& name) const {
    std::string out = "# TYPE " + name + " histogram\n";
    for (size_t i = 0; i < std::size(kBounds); ++i) {
      char le[32];
      std::snprintf(le, sizeof le, "%g", kBounds[i]);
      out += name + "_bucket{le=\"" + le + "\"} " + std::to_string(counts_[i].load()) + "\n";
    }
    out += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_.load()) + "\n";
    char sum[64];
    std::snprintf(sum, sizeof sum, "%.6f", sum_us_.load() / 1e6);
    out += name + "_sum " + sum + "\n";
    out += name + "_count " + std::to_string(count_.load()) + "\n";
    return out;
  }

 private:
  std::atomic<uint64_t> counts_[std::size(kBounds)] = {};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_us_{0};
};

// On-demand reads of one blob: counted, timed, and announced to the background fetcher so that
// it can step aside while a container waits.
class TrackedBlobSource : public layer::BlobSource {
 public:
  TrackedBlobSource(fetch::UnixfsReader* reader, mf::Cid cid, std::atomic<int>* foreground,
                    LatencyHistogram* latency)
      : reader_(reader), cid_(std::move(cid)), foreground_(foreground), latency_(latency) {}
  Result<size_t> ReadAt(uint64_t offset, MutableByteView out, fetch::Deadline dl) override {
    foreground_->fetch_add(1);
    auto start = Clock::now();
    auto r = reader_->ReadAt(cid_, offset, out, dl);
    latency_->Observe(std::chrono::duration<double>(Clock::now() - start).count());
    foreground_->fetch_sub(1);
    return r;
  }

 private:
  fetch::UnixfsReader* reader_;
  mf::Cid cid_;
  std::atomic<int>* foreground_;
  LatencyHistogram* latency_;
};

class FuseLazyLayers : public LazyLayers {
 public:
  FuseLazyLayers(Config config, std::string root) : config_(std::move(config)), root_(root) {}

  ~FuseLazyLayers() override {
    {
      std::lock_guard lk(evict_mu_);
      evict_stop_ = true;
    }
    evict_cv_.notify_all();
    if (evictor_.joinable()) evictor_.join();
    std::vector<std::shared_ptr<Layer>> layers;
    {
      std::lock_guard lk(mu_);
      for (auto& [k, l] : layers_) layers.push_back(l);
    }
    for (auto& l : layers) StopBackground(*l);
    {
      std::lock_guard lk(mu_);
      shutting_down_ = true;
    }
    if (fuse_) fuse_->Unmount();
    if (watcher_.joinable()) watcher_.join();
    fuse_.reset();
    layers_.clear();
    reader_.reset();
    fetcher_.reset();
  }

  Status Init() {
    std::error_code ec;
    for (const char* d : {"/indexes", "/spans"}) {
      fs::create_directories(root_ + "/layers" + d, ec);
      if (ec) return IoError("create " + root_ + "/layers" + d + ": " + ec.message());
    }
    fetch::MakeFetcherOptions fo;
    fetcher_ = IPFLY_TRY(fetch::MakeFetcher(config_, fo));
    reader_ = std::make_unique<fetch::UnixfsReader>(
        fetcher_.get(), fetch::UnixfsReaderOptions::FromConfig(config_.fetch));
    IPFLY_RETURN_IF_ERROR(MountFuse());
    evictor_ = std::thread([this] { EvictorLoop(); });
    return OkStatus();
  }

  Result<RemoteLayer> Resolve(const Labels& labels) override {
    RemoteLayer rl;
    rl.digest = LabelOr(labels, kCriDigestLabel);
    if (rl.digest.empty()) rl.digest = LabelOr(labels, kStargzDigestLabel);
    // 1. ipfly's own annotations.
    if (std::string cid = LabelOr(labels, kIpflyCidLabel); !cid.empty()) {
      rl.blob_cid = cid;
      rl.index_cid = LabelOr(labels, kIpflyIndexLabel);
      rl.resolved_by = "ipfly-labels";
    }
    // 2. The descriptor's urls (ctr-remote / nerdctl IPFS images): comma-separated.
    if (rl.blob_cid.empty()) {
      std::string urls = LabelOr(labels, kRemoteUrlsLabel);
      size_t pos = 0;
      while (pos <= urls.size() && rl.blob_cid.empty()) {
        size_t comma = urls.find(',', pos);
        std::string u =
            urls.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (u.starts_with("ipfs://")) {
          rl.blob_cid = u.substr(7);
          while (!rl.blob_cid.empty() && rl.blob_cid.back() == '/') rl.blob_cid.pop_back();
          rl.resolved_by = "remote-urls";
        }
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
    }
    // 3. The layer digest at the resolver (also fills a missing index CID for 1. and 2.).
    if ((rl.blob_cid.empty() || rl.index_cid.empty()) && !rl.digest.empty() &&
        !config_.snapshotter.resolver.empty()) {
      auto looked = LookupDigest(rl.digest);
      if (looked.ok()) {
        if (rl.blob_cid.empty()) {
          rl.blob_cid = looked->blob_cid;
          rl.resolved_by = "resolver";
        }
        if (rl.index_cid.empty() && looked->blob_cid == rl.blob_cid) {
          rl.index_cid = looked->index_cid;
        }
        if (rl.size == 0) rl.size = looked->size;
      } else if (rl.blob_cid.empty()) {
        return std::move(looked).error();
      }
    }
    if (rl.blob_cid.empty()) {
      return NotFound(
          rl.digest.empty()
              ? "no ipfly/ipfs labels and no layer digest label"
              : "layer " + rl.digest + " has no IPFS labels" +
                    (config_.snapshotter.resolver.empty() ? " and no resolver is configured" : ""));
    }
    auto cid = mf::Cid::Parse(rl.blob_cid);
    if (!cid.ok())
      return InvalidArgument("layer CID '" + rl.blob_cid + "': " + cid.error().message());
    rl.blob_cid = cid->ToString();
    // The index decides seekability; loading it now also caches it locally for restarts.
    auto index = IPFLY_TRY(LoadIndex(rl));
    if (!rl.digest.empty() && index->layer_digest && index->layer_digest->ToString() != rl.digest) {
      return Error(Errc::kCorrupt, "layer " + rl.blob_cid + " is " +
                                       index->layer_digest->ToString() + ", but the labels say " +
                                       rl.digest);
    }
    if (rl.digest.empty() && index->layer_digest) rl.digest = index->layer_digest->ToString();
    if (rl.size == 0) rl.size = index->compressed_size;
    if (!index->seekable) {
      return Error(Errc::kFailedPrecondition,
                   "not seekable: layer " + rl.blob_cid + " (" +
                       std::string(layer::CompressionName(index->compression)) +
                       ") has no access points");
    }
    if (rl.size < config_.snapshotter.min_lazy_size) {
      return Error(Errc::kFailedPrecondition, "too small: layer " + rl.blob_cid + " is " +
                                                  std::to_string(rl.size) +
                                                  " bytes, below snapshotter.min_lazy_size");
    }
    return rl;
  }

  Result<std::string> Attach(const std::string& id, const RemoteLayer& rl) override {
    IPFLY_RETURN_IF_ERROR(ValidateId(id));
    auto index = IPFLY_TRY(LoadIndex(rl));
    auto cid = IPFLY_TRY(mf::Cid::Parse(rl.blob_cid));
    std::unique_lock lk(mu_);
    if (!fuse_) return Error(Errc::kUnavailable, "the FUSE mount is not available");
    if (auto it = attached_.find(id); it != attached_.end()) {
      if (it->second == rl.blob_cid) return DirOf(id);
      return Error(Errc::kAlreadyExists,
                   "lazy layer id " + id + " is attached to another layer " + it->second);
    }
    std::shared_ptr<Layer> layer;
    if (auto it = layers_.find(rl.blob_cid); it != layers_.end()) {
      layer = it->second;
    } else {
      layer = std::make_shared<Layer>();
      layer->remote = rl;
      layer->index = index;
      layer::LayerReaderOptions ro;
      ro.cache_dir = root_ + "/layers/spans";
      // One set of files per layer object: two blob CIDs of the same bytes (CIDv0/CIDv1) are
      // two layers here and must not share a span map (LayerReaderOptions::cache_name).
      ro.cache_name = layer::SpanCacheName(*index) + "-" +
                      HexEncode(ByteView(Sha256Of(AsBytes(rl.blob_cid)).data(), 8));
      layer->cache_name = ro.cache_name;
      ro.on_span_cached = [this](uint64_t n) { OnSpanCached(n); };
      auto src = std::make_unique<TrackedBlobSource>(reader_.get(), cid, &foreground_, &latency_);
      auto lr = layer::LayerReader::Open(index, std::move(src), ro);
      if (!lr.ok()) return std::move(lr).error().With("span cache of " + rl.blob_cid);
      layer->reader = std::shared_ptr<layer::LayerReader>(std::move(*lr));
      layer->tree = IPFLY_TRY(
          fusefs::LayerTree::Make(rl.digest.empty() ? rl.blob_cid : rl.digest, index, layer->reader,
                                  std::chrono::milliseconds(config_.fetch.timeout_ms)));
      layers_[rl.blob_cid] = layer;
      if (config_.snapshotter.background_fetch) StartBackground(layer, cid);
    }
    IPFLY_RETURN_IF_ERROR(fuse_->Attach(id, layer->tree));
    layer->ids.insert(id);
    attached_[id] = rl.blob_cid;
    lazy_mounts_++;
    IPFLY_LOG_INFO("lazy layer {} ({}) attached as {}", rl.blob_cid, rl.digest, DirOf(id));
    return DirOf(id);
  }

  Result<std::string> EnsureAttached(const std::string& id, const RemoteLayer& rl) override {
    IPFLY_RETURN_IF_ERROR(ValidateId(id));
    {
      std::lock_guard lk(mu_);
      if (!fuse_ || fuse_dead_) IPFLY_RETURN_IF_ERROR(RemountLocked());
    }
    std::string dir = IPFLY_TRY(Attach(id, rl));
    // Health: the directory must answer through the kernel (a dead connection gives ENOTCONN).
    struct stat st {};
    if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
      int err = errno;
      IPFLY_LOG_WARN("lazy layer {} at {} is not healthy ({}); remounting", rl.blob_cid, dir,
                     std::strerror(err));
      {
        std::lock_guard lk(mu_);
        IPFLY_RETURN_IF_ERROR(RemountLocked());
      }
      if (::stat(dir.c_str(), &st) != 0) return ErrnoError("stat lazy layer dir " + dir, errno);
    }
    return dir;
  }

  Status Detach(const std::string& id) override {
    std::shared_ptr<Layer> orphan;
    {
      std::lock_guard lk(mu_);
      auto it = attached_.find(id);
      if (it == attached_.end()) return NotFound("lazy layer id " + id + " is not attached");
      std::string blob = it->second;
      attached_.erase(it);
      if (fuse_ && !fuse_dead_) (void)fuse_->Detach(id);
      auto lit = layers_.find(blob);
      if (lit != layers_.end()) {
        lit->second->ids.erase(id);
        if (lit->second->ids.empty()) {
          orphan = lit->second;
          layers_.erase(lit);
        }
      }
    }
    if (orphan) Release(*orphan);
    return OkStatus();
  }

  std::vector<LayerStatus> Layers() override {
    std::vector<LayerStatus> out;
    std::lock_guard lk(mu_);
    for (const auto& [id, blob] : attached_) {
      auto it = layers_.find(blob);
      if (it == layers_.end()) continue;
      const Layer& l = *it->second;
      LayerStatus s;
      s.id = id;
      s.layer = l.remote;
      s.dir = DirOf(id);
      auto rs = l.reader->stats();
      s.bytes_fetched = rs.compressed_bytes_read + l.bg_bytes.load();
      s.blob_size = l.index->compressed_size;
      s.background_complete = l.bg_complete.load();
      s.span_cache_bytes = l.reader->SpanCacheBytes();
      s.in_use = InUseLocked(l);
      out.push_back(std::move(s));
    }
    return out;
  }

  std::string MetricsText() override {
    std::string out = latency_.Text("ipfly_lazy_fetch_latency_seconds");
    auto fs = fetcher_->stats();
    out += "# TYPE ipfly_blocks_fetched_total counter\nipfly_blocks_fetched_total " +
           std::to_string(fs.fetched) + "\n";
    out += fetcher_->SourceMetricsText();  // e.g. the Powergate cold fallback's thaw jobs
    auto sc = SpanCache();
    auto line = [&](const char* name, const char* type, const char* help, uint64_t v) {
      out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
             name + " " + std::to_string(v) + "\n";
    };
    line("ipfly_snapshotter_span_cache_bytes", "gauge",
         "Decompressed bytes in the span caches of all attached lazy layers.", sc.bytes);
    line("ipfly_snapshotter_span_cache_max_bytes", "gauge",
         "Cap on the span caches (snapshotter.span_cache_max_size; 0 = none).", sc.max_bytes);
    line("ipfly_snapshotter_span_cache_evictions_total", "counter",
         "Span caches of layers not in use dropped to stay under the cap.", sc.evicted_layers);
    line("ipfly_snapshotter_span_cache_evicted_bytes_total", "counter",
         "Bytes released by span cache evictions.", sc.evicted_bytes);
    line("ipfly_snapshotter_span_cache_over_cap_in_use_total", "counter",
         "Times the span caches stayed over the cap with only layers in use left.",
         sc.over_cap_in_use);
    return out;
  }

  void SetInUse(const std::set<std::string>& ids) override {
    {
      std::lock_guard lk(mu_);
      in_use_ids_ = ids;
    }
    // Layers may have become evictable.
    WakeEvictor();
  }

  SpanCacheStatus SpanCache() override {
    SpanCacheStatus s;
    {
      std::lock_guard lk(mu_);
      for (const auto& [blob, l] : layers_) s.bytes += l->reader->SpanCacheBytes();
    }
    s.max_bytes = config_.snapshotter.span_cache_max_bytes;
    s.evicted_layers = evicted_layers_.load();
    s.evicted_bytes = evicted_bytes_.load();
    s.over_cap_in_use = over_cap_in_use_.load();
    return s;
  }

 private:
  struct Layer {
    RemoteLayer remote;
    std::shared_ptr<const layer::LayerIndex> index;
    std::shared_ptr<layer::LayerReader> reader;
    std::shared_ptr<fusefs::LayerTree> tree;
    std::string cache_name;  // span cache files <root>/layers/spans/<cache_name>.{data,map}
    std::set<std::string> ids;
    std::thread bg;
    std::atomic<bool> stop{false};
    std::atomic<bool> bg_complete{false};
    std::atomic<uint64_t> bg_bytes{0};
  };

  // A layer is in use when one of its ids is in the set the service gave (mu_ held).
  bool InUseLocked(const Layer& l) const {
    for (const auto& id : l.ids) {
      if (in_use_ids_.count(id)) return true;
    }
    return false;
  }

  // From a reading thread, after a span was written: only a counter and, over the cap, a wake-up
  // of the evictor (eviction never runs in a container's read).
  void OnSpanCached(uint64_t n) {
    const uint64_t cap = config_.snapshotter.span_cache_max_bytes;
    if (span_bytes_.fetch_add(n) + n > cap && cap > 0) WakeEvictor();
  }

  void WakeEvictor() {
    {
      std::lock_guard lk(evict_mu_);
      evict_wanted_ = true;
    }
    evict_cv_.notify_all();
  }

  void EvictorLoop() {
    std::unique_lock lk(evict_mu_);
    while (!evict_stop_) {
      evict_cv_.wait_for(lk, kEvictPeriod, [&] { return evict_stop_ || evict_wanted_; });
      if (evict_stop_) break;
      evict_wanted_ = false;
      lk.unlock();
      EnforceCap();
      lk.lock();
    }
  }

  // Over the cap: drops whole span caches of layers not in use, least recently read first,
  // down to 90 % of the cap. Layers in use are never evicted; if they alone exceed the cap, that
  // is warned about and counted once per episode. Only the evictor thread runs this.
  void EnforceCap() {
    const uint64_t cap = config_.snapshotter.span_cache_max_bytes;
    struct Candidate {
      std::shared_ptr<layer::LayerReader> reader;
      std::string blob;
      uint64_t bytes;
      Clock::time_point last;
      bool in_use;
    };
    std::vector<Candidate> cands;
    uint64_t total = 0;
    {
      std::lock_guard lk(mu_);
      for (const auto& [blob, l] : layers_) {
        uint64_t b = l->reader->SpanCacheBytes();
        total += b;
        cands.push_back({l->reader, blob, b, l->reader->LastAccess(), InUseLocked(*l)});
      }
    }
    span_bytes_.store(total);
    if (cap == 0 || total <= cap) {
      over_cap_episode_ = false;
      return;
    }
    const uint64_t target = cap - cap / 10;
    std::sort(cands.begin(), cands.end(),
              [](const Candidate& a, const Candidate& b) { return a.last < b.last; });
    for (auto& c : cands) {
      if (total <= target) break;
      if (c.in_use || c.bytes == 0) continue;
      // A layer that became in use since the snapshot above may lose its cache here: that costs
      // a refetch, never correctness (the reader drops safely under concurrent reads).
      auto freed = c.reader->DropSpanCache();
      if (!freed.ok()) {
        IPFLY_LOG_WARN("span cache cap: dropping the span cache of {} failed: {}", c.blob,
                       freed.error().ToString());
        continue;
      }
      total -= std::min(total, *freed);
      evicted_layers_++;
      evicted_bytes_ += *freed;
      IPFLY_LOG_INFO(
          "span cache cap: dropped {} bytes of decompressed spans of layer {} (not in "
          "use); span caches now {} of {} bytes",
          *freed, c.blob, total, cap);
    }
    span_bytes_.store(total);
    if (total > cap) {
      if (!over_cap_episode_) {
        over_cap_episode_ = true;
        over_cap_in_use_++;
        IPFLY_LOG_WARN(
            "span cache cap: {} bytes of span caches exceed "
            "snapshotter.span_cache_max_size ({} bytes), and every layer left is in "
            "use by a container or view; nothing more is evicted",
            total, cap);
      }
    } else {
      over_cap_episode_ = false;
    }
  }

  static Status ValidateId(const std::string& id) {
    if (id.empty() || id == "." || id == ".." || id.find('/') != std::string::npos) {
      return InvalidArgument("bad lazy layer id '" + id + "'");
    }
    return OkStatus();
  }

  std::string Mountpoint() const { return root_ + "/lazy"; }
  std::string DirOf(const std::string& id) const { return Mountpoint() + "/" + id; }

  Status MountFuse() {
    IPFLY_RETURN_IF_ERROR(fusefs::FuseFs::CleanStaleMount(Mountpoint()));
    fusefs::FuseOptions fo;
    fo.mountpoint = Mountpoint();
    fo.fsname = "ipfly";
    fo.threads = config_.snapshotter.fuse_threads;
    fo.entry_timeout_s = config_.snapshotter.fuse_timeout_s;
    fo.attr_timeout_s = config_.snapshotter.fuse_timeout_s;
    // Trees are detached while containers may still hold files open: keep OPEN/RELEASE.
    fo.zero_message_open = false;
    fuse_ = IPFLY_TRY(fusefs::FuseFs::Mount(fo));
    fuse_dead_ = false;
    fusefs::FuseFs* f = fuse_.get();
    watcher_ = std::thread([this, f] {
      f->Wait();
      std::lock_guard lk(mu_);
      if (!shutting_down_ && fuse_.get() == f) {
        fuse_dead_ = true;
        IPFLY_LOG_ERROR("the lazy layer FUSE mount at {} went away; it is remounted on next use",
                        Mountpoint());
      }
    });
    return OkStatus();
  }

  // Replaces a dead or unhealthy FUSE mount and re-attaches every layer (mu_ held).
  Status RemountLocked() {
    auto old = std::move(fuse_);
    auto old_watcher = std::move(watcher_);
    if (old) {
      mu_.unlock();
      old->Unmount();
      if (old_watcher.joinable()) old_watcher.join();
      mu_.lock();
      old.reset();
    }
    IPFLY_RETURN_IF_ERROR(MountFuse());
    for (const auto& [id, blob] : attached_) {
      auto it = layers_.find(blob);
      if (it == layers_.end()) continue;
      auto st = fuse_->Attach(id, it->second->tree);
      if (!st.ok()) IPFLY_LOG_ERROR("re-attach {}: {}", id, st.error().ToString());
    }
    return OkStatus();
  }

  Result<RemoteLayer> LookupDigest(const std::string& digest) {
    auto d = Digest::Parse(digest);
    if (!d.ok()) return InvalidArgument("layer digest '" + digest + "': " + d.error().message());
    std::string base = config_.snapshotter.resolver;
    while (base.ends_with("/")) base.pop_back();
    fetch::HttpRequest req;
    req.url = base + "/ipfly/v1/layers/" + d->ToString();
    req.deadline = fetch::HttpRequest::Clock::now() + std::chrono::seconds(10);
    req.connect_timeout = std::chrono::milliseconds(3000);
    req.max_body_bytes = 1 << 20;
    auto resp = fetch::HttpClient::Default()->Fetch(req);
    if (!resp.ok()) return std::move(resp).error().With("resolver " + req.url);
    if (resp->status == 404) return NotFound("resolver does not know layer " + digest);
    if (!resp->ok()) {
      return Error(Errc::kUnavailable, "resolver " + req.url + ": HTTP " +
                                           std::to_string(resp->status) + ": " +
                                           std::string(resp->body_text().substr(0, 200)));
    }
    try {
      auto j = nlohmann::json::parse(resp->body_text());
      RemoteLayer rl;
      rl.blob_cid = j.at("cid").get<std::string>();
      if (j.contains("index_cid") && j["index_cid"].is_string()) {
        rl.index_cid = j["index_cid"].get<std::string>();
      }
      if (j.contains("size") && j["size"].is_number_unsigned()) rl.size = j["size"].get<uint64_t>();
      rl.digest = digest;
      return rl;
    } catch (const std::exception& e) {
      return Error(Errc::kCorrupt, "resolver answer for " + digest + " is not valid: " + e.what());
    }
  }

  std::string IndexCachePath(const std::string& blob_cid) const {
    return root_ + "/layers/indexes/" + blob_cid + ".ix";
  }

  // The layer's index: from the local copy (restart: no network), else by its CID, else built
  // from the blob (a full read). Local copies are written only after verification + decoding.
  Result<std::shared_ptr<const layer::LayerIndex>> LoadIndex(const RemoteLayer& rl) {
    auto blob = IPFLY_TRY(mf::Cid::Parse(rl.blob_cid));
    std::string path = IndexCachePath(blob.ToString());
    {
      std::lock_guard lk(index_mu_);
      if (auto it = index_memo_.find(path); it != index_memo_.end()) return it->second;
    }
    Bytes data;
    std::shared_ptr<const layer::LayerIndex> index;
    if (std::ifstream in(path, std::ios::binary); in) {
      data.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
      auto idx = layer::LayerIndex::Decode(data);
      if (idx.ok() && idx->blob_cid && idx->blob_cid->multihash() == blob.multihash()) {
        index = std::make_shared<const layer::LayerIndex>(std::move(*idx));
      } else {
        IPFLY_LOG_WARN("local index copy {} is unusable; fetching it again", path);
      }
    }
    if (!index && !rl.index_cid.empty()) {
      auto icid = mf::Cid::Parse(rl.index_cid);
      if (!icid.ok())
        return InvalidArgument("index CID '" + rl.index_cid + "': " + icid.error().message());
      data.clear();
      auto deadline = fetch::Clock::now() + std::chrono::milliseconds(config_.fetch.timeout_ms);
      IPFLY_RETURN_IF_ERROR(reader_->Stream(
          *icid, 0, UINT64_MAX,
          [&](ByteView c) -> ipfly::Status {
            if (data.size() + c.size() > kMaxIndexBytes)
              return TooLarge("layer index over 256 MiB");
            data.insert(data.end(), c.begin(), c.end());
            return OkStatus();
          },
          deadline));
      auto idx = layer::LayerIndex::Decode(data);
      if (!idx.ok()) return std::move(idx).error().With("index " + rl.index_cid);
      if (idx->blob_cid && !(idx->blob_cid->multihash() == blob.multihash())) {
        return Error(Errc::kCorrupt, "index " + rl.index_cid + " describes blob " +
                                         idx->blob_cid->ToString() + ", not " + rl.blob_cid);
      }
      if (!idx->blob_cid) idx->blob_cid = blob;
      index = std::make_shared<const layer::LayerIndex>(std::move(*idx));
      data = index->Encode();
    }
    if (!index) {
      // No index anywhere: build it in one pass over the blob (this reads the whole layer, which
      // then sits in the block cache).
      IPFLY_LOG_INFO("building the layer index of {} (no index CID known)", rl.blob_cid);
      layer::LayerIndexBuilder builder;
      IPFLY_RETURN_IF_ERROR(reader_->Stream(
          blob, 0, UINT64_MAX, [&](ByteView c) { return builder.Feed(c); },
          fetch::Clock::now() + std::chrono::minutes(30)));
      auto idx = builder.Finish();
      if (!idx.ok()) return std::move(idx).error().With("layer " + rl.blob_cid);
      idx->blob_cid = blob;
      if (!rl.digest.empty() && idx->layer_digest && idx->layer_digest->ToString() != rl.digest) {
        return Error(Errc::kCorrupt, "layer " + rl.blob_cid + " hashes to " +
                                         idx->layer_digest->ToString() + ", labels say " +
                                         rl.digest);
      }
      index = std::make_shared<const layer::LayerIndex>(std::move(*idx));
      data = index->Encode();
    }
    if (!rl.digest.empty() && index->layer_digest && index->layer_digest->ToString() != rl.digest) {
      return Error(Errc::kCorrupt, "index of " + rl.blob_cid + " is for layer " +
                                       index->layer_digest->ToString() + ", labels say " +
                                       rl.digest);
    }
    if (!fs::exists(path)) {
      std::string tmp = path + ".tmp." + std::to_string(::getpid());
      {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out.write(reinterpret_cast<const char*>(data.data()),
                  static_cast<std::streamsize>(data.size()));
        if (!out) return IoError("write " + tmp);
      }
      std::error_code ec;
      fs::rename(tmp, path, ec);
      if (ec) return IoError("rename " + tmp + ": " + ec.message());
    }
    std::lock_guard lk(index_mu_);
    index_memo_[path] = index;
    return index;
  }

  void StartBackground(const std::shared_ptr<Layer>& layer, const mf::Cid& cid) {
    Layer* l = layer.get();
    l->bg = std::thread([this, l, cid] { Background(*l, cid); });
  }

  // Fetches the whole blob in 4 MiB steps, pausing while on-demand reads are in flight, checks
  // its sha256 against the layer digest, then fills the span cache.
  void Background(Layer& l, const mf::Cid& cid) {
    const uint64_t size = l.index->compressed_size;
    Sha256 h;
    Bytes buf(4 << 20);
    for (uint64_t off = 0; off < size && !l.stop; off += buf.size()) {
      while (foreground_.load() > 0 && !l.stop)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      auto n = reader_->ReadAt(cid, off, MutableByteView(buf.data(), buf.size()),
                               fetch::Clock::now() + std::chrono::minutes(5));
      if (!n.ok()) {
        if (!l.stop)
          IPFLY_LOG_ERROR("background fetch of {}: {}", l.remote.blob_cid, n.error().ToString());
        return;
      }
      h.Update(ByteView(buf.data(), *n));
      l.bg_bytes += *n;
      if (*n < buf.size()) break;
    }
    if (l.stop) return;
    auto got = Digest::FromSha256(h.Final());
    if (l.index->layer_digest && !(got == *l.index->layer_digest)) {
      IPFLY_LOG_ERROR("LAYER DIGEST MISMATCH: blob {} hashes to {}, the layer is {}",
                      l.remote.blob_cid, got.ToString(), l.index->layer_digest->ToString());
      return;
    }
    for (uint64_t off = 0; off < l.index->uncompressed_size && !l.stop; off += buf.size()) {
      while (foreground_.load() > 0 && !l.stop)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      auto n = l.reader->Read(off, MutableByteView(buf.data(), buf.size()),
                              fetch::Clock::now() + std::chrono::minutes(5));
      if (!n.ok()) {
        if (!l.stop)
          IPFLY_LOG_ERROR("background decompress of {}: {}", l.remote.blob_cid,
                          n.error().ToString());
        return;
      }
    }
    if (l.stop) return;
    l.bg_complete = true;
    IPFLY_LOG_INFO("background fetch of {} complete, digest {} verified", l.remote.blob_cid,
                   got.ToString());
  }

  static void StopBackground(Layer& l) {
    l.stop = true;
    if (l.bg.joinable()) l.bg.join();
  }

  // The last snapshot of a layer is gone: stop its background fetch and drop its span cache.
  // Its blocks stay in the block cache, which evicts them by LRU under cache.max_size.
  void Release(Layer& l) {
    StopBackground(l);
    l.reader.reset();
    std::error_code ec;
    for (const char* ext : {".data", ".map"}) {
      fs::remove(root_ + "/layers/spans/" + l.cache_name + ext, ec);
    }
    IPFLY_LOG_INFO("released lazy layer {}", l.remote.blob_cid);
    PruneSpanCaches();
  }

  // Removes span caches of layers no snapshot has attached (e.g. left by snapshots removed while
  // the snapshotter was down).
  void PruneSpanCaches() {
    std::set<std::string> keep;
    {
      std::lock_guard lk(mu_);
      for (const auto& [blob, l] : layers_) keep.insert(l->cache_name);
    }
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root_ + "/layers/spans", ec)) {
      std::string stem = e.path().stem().string();
      if (!keep.count(stem)) {
        fs::remove(e.path(), ec);
        IPFLY_LOG_INFO("removed unused span cache {}", e.path().string());
      }
    }
  }

  Config config_;
  const std::string root_;
  std::unique_ptr<fetch::Fetcher> fetcher_;
  std::unique_ptr<fetch::UnixfsReader> reader_;
  std::atomic<int> foreground_{0};
  LatencyHistogram latency_;

  std::mutex mu_;  // guards everything below
  std::unique_ptr<fusefs::FuseFs> fuse_;
  std::thread watcher_;
  bool fuse_dead_ = false;
  bool shutting_down_ = false;
  std::map<std::string, std::shared_ptr<Layer>> layers_;  // by blob CID
  std::map<std::string, std::string> attached_;           // id -> blob CID
  uint64_t lazy_mounts_ = 0;
  std::set<std::string> in_use_ids_;  // SetInUse

  // Span cache cap: the evictor thread runs EnforceCap when woken and every kEvictPeriod.
  std::atomic<uint64_t> span_bytes_{0};  // + each span written; set to the exact sum each pass
  std::atomic<uint64_t> evicted_layers_{0};
  std::atomic<uint64_t> evicted_bytes_{0};
  std::atomic<uint64_t> over_cap_in_use_{0};
  bool over_cap_episode_ = false;  // evictor thread only
  std::mutex evict_mu_;
  std::condition_variable evict_cv_;
  bool evict_wanted_ = false;
  bool evict_stop_ = false;
  std::thread evictor_;

  std::mutex index_mu_;
  std::map<std::string, std::shared_ptr<const layer::LayerIndex>> index_memo_;
};

}  // namespace

Result<std::unique_ptr<LazyLayers>> MakeFuseLazyLayers(const Config& config,
                                                       const std::string& root_dir) {
  if (::geteuid() != 0) {
    return Error(Errc::kPermissionDenied,
                 "lazy layers need root (FUSE allow_other mount used as overlay lowerdirs)");
  }
  auto l = std::make_unique<FuseLazyLayers>(config, root_dir);
  IPFLY_RETURN_IF_ERROR(l->Init());
  return std::unique_ptr<LazyLayers>(std::move(l));
}

}  // namespace ipfly::snapshotter
