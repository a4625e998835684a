#include "registry_shim/publisher.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <unordered_set>

#include "core/base/log.h"
#include "core/codec/car.h"
#include "core/codec/dagpb.h"

namespace ipfly::registry {

namespace fs = std::filesystem;

KuboPublisher::KuboPublisher(PublisherOptions options, fetch::Fetcher* fetcher)
    : options_(std::move(options)), fetcher_(fetcher) {}

Result<std::unique_ptr<KuboPublisher>> KuboPublisher::Create(PublisherOptions options,
                                                             fetch::Fetcher* fetcher) {
  if (options.kubo_url.empty()) return InvalidArgument("publish_kubo: empty URL");
  if (!options.kubo_url.starts_with("http://") && !options.kubo_url.starts_with("https://")) {
    return InvalidArgument("publish_kubo: " + options.kubo_url + " is not an http(s) URL");
  }
  std::error_code ec;
  fs::create_directories(options.spool_dir, ec);
  if (ec) return IoError("create " + options.spool_dir + ": " + ec.message());
  // CARs of a previous run are leftovers of a crash; the queue that named them is gone.
  for (const auto& e : fs::directory_iterator(options.spool_dir, ec)) {
    if (e.path().extension() == ".car") fs::remove(e.path(), ec);
  }
  auto p = std::unique_ptr<KuboPublisher>(new KuboPublisher(std::move(options), fetcher));
  p->kubo_ = std::make_unique<fetch::KuboRpcClient>(p->options_.kubo_url, nullptr);
  p->worker_ = std::thread([raw = p.get()] { raw->Run(); });
  return p;
}

KuboPublisher::~KuboPublisher() { Shutdown(); }

bool KuboPublisher::Enqueue(std::string what, const std::vector<std::string>& roots) {
  Item item{std::move(what), {}};
  for (const auto& r : roots) {
    if (r.empty()) continue;
    auto c = mf::Cid::Parse(r);
    if (c.ok()) item.roots.push_back(*c);
  }
  if (item.roots.empty()) return true;
  {
    std::lock_guard lock(mu_);
    if (stopping_ || queue_.size() >= options_.max_queue) {
      dropped_.fetch_add(1);
      IPFLY_LOG_WARN("publish {}: dropped ({})", item.what,
                     stopping_ ? "shutting down" : "queue full");
      return false;
    }
    queue_.push_back(std::move(item));
  }
  queued_.fetch_add(1);
  cv_.notify_all();
  return true;
}

void KuboPublisher::Shutdown() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
}

void KuboPublisher::Run() {
  for (;;) {
    Item item;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and drained
      item = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Status st = OkStatus();
    for (int attempt = 1;; ++attempt) {
      st = PublishOnce(item);
      if (st.ok()) break;
      std::unique_lock lock(mu_);
      if (stopping_ || attempt >= options_.attempts) break;
      IPFLY_LOG_INFO("publish {} to {}: attempt {} failed: {}", item.what, options_.kubo_url,
                     attempt, st.error().ToString());
      // Backoff, cut short by Shutdown (the item then gets no further attempts).
      cv_.wait_for(lock, options_.backoff * attempt, [&] { return stopping_; });
      if (stopping_) break;
    }
    if (st.ok()) {
      ok_.fetch_add(1);
    } else {
      failed_.fetch_add(1);
      IPFLY_LOG_WARN("publish {} to {} failed: {}", item.what, options_.kubo_url,
                     st.error().ToString());
    }
    std::lock_guard lock(mu_);
    busy_ = false;
  }
}

Status KuboPublisher::WriteCar(const Item& item, const std::string& path, uint64_t* blocks,
                               uint64_t* bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return ErrnoError("create " + path, errno);
  auto write_all = [fd](ByteView data) -> Status {
    while (!data.empty()) {
      ssize_t n = ::write(fd, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoError("write CAR", errno);
      }
      data = data.subspan(static_cast<size_t>(n));
    }
    return OkStatus();
  };
  codec::CarV1Writer car(write_all);
  Status st = car.WriteHeader(item.roots);
  // Iterative DFS over the local stores (every block read is verified against its CID);
  // a block shared by two roots goes in once.
  std::unordered_set<mf::Cid> seen;
  std::vector<mf::Cid> stack(item.roots.rbegin(), item.roots.rend());
  while (st.ok() && !stack.empty()) {
    mf::Cid cid = stack.back();
    stack.pop_back();
    if (!seen.insert(cid).second) continue;
    auto block = fetcher_->GetLocal(cid);
    if (!block.ok()) {
      st = block.error().With("block " + cid.ToString());
      break;
    }
    st = car.Put(*block);
    ++*blocks;
    *bytes += block->data().size();
    if (!st.ok() || cid.codec() != 0x70) continue;  // raw leaves have no links
    auto node = codec::DecodeDagPb(block->data());
    if (!node.ok()) {
      st = node.error();
      break;
    }
    for (auto it = node->links.rbegin(); it != node->links.rend(); ++it) stack.push_back(it->hash);
  }
  if (::close(fd) != 0 && st.ok()) st = ErrnoError("close " + path, errno);
  return st;
}

Status KuboPublisher::PublishOnce(const Item& item) {
  std::string path;
  auto timeout = options_.import_timeout;
  {
    std::lock_guard lock(mu_);
    path = options_.spool_dir + "/" + std::to_string(++seq_) + ".car";
    // While draining at shutdown, a stalled node must not hold the exit for long.
    if (stopping_) timeout = std::min(timeout, options_.drain_import_timeout);
  }
  uint64_t blocks = 0, bytes = 0;
  Status st = WriteCar(item, path, &blocks, &bytes);
  if (st.ok()) {
    auto roots = kubo_->DagImport(path, fetch::DeadlineIn(timeout));
    if (!roots.ok()) {
      st = roots.error();
    } else {
      blocks_.fetch_add(blocks);
      bytes_.fetch_add(bytes);
      IPFLY_LOG_INFO("published {} ({} blocks, {} bytes) to {}", item.what, blocks, bytes,
                     options_.kubo_url);
    }
  }
  ::unlink(path.c_str());
  return st;
}

std::string KuboPublisher::MetricsText() const {
  std::string out;
  auto counter = [&](const char* name, uint64_t v) {
    out += std::string("# TYPE ") + name + " counter\n" + name + " " + std::to_string(v) + "\n";
  };
  counter("ipfly_registry_publish_queued_total", queued_.load());
  counter("ipfly_registry_publish_ok_total", ok_.load());
  counter("ipfly_registry_publish_failed_total", failed_.load());
  counter("ipfly_registry_publish_dropped_total", dropped_.load());
  counter("ipfly_registry_publish_blocks_total", blocks_.load());
  counter("ipfly_registry_publish_bytes_total", bytes_.load());
  size_t len = 0;
  {
    std::lock_guard lock(mu_);
    len = queue_.size() + (busy_ ? 1 : 0);
  }
  out += "# TYPE ipfly_registry_publish_queue_length gauge\nipfly_registry_publish_queue_length " +
         std::to_string(len) + "\n";
  return out;
}

}  // namespace ipfly::registry
