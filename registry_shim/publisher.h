// Publishing to a Kubo node ([registry] publish_kubo, --publish-kubo URL): after a blob or a
// manifest has been imported into the registry's block store, its DAG is copied to the node with
// /api/v0/dag/import (one CARv1 per item, written from the local store in DFS order), which pins
// the roots (Kubo and js-ipfs both pin CAR roots by default; the client also sends pin-roots=true).
//
// Publishing never fails or slows a push: Enqueue only appends to a bounded in-memory queue that
// one worker thread drains. A full queue drops the item (counted), a failed import is retried a
// few times with backoff and then logged and counted. Shutdown() stops the retries but still
// tries every queued item once (each bounded by drain_import_timeout), so a graceful stop
// publishes what was pushed before it.
// Queued items do not survive a crash (the content stays in the registry's own store and its
// trustless gateway; pushing again re-publishes it).
//
// Thread safety: Enqueue, MetricsText and Shutdown may be called from any thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "core/multiformats/cid.h"
#include "ipfs_fetch/fetcher.h"
#include "ipfs_fetch/kubo_rpc.h"

namespace ipfly::registry {

struct PublisherOptions {
  std::string kubo_url;   // http://127.0.0.1:5001
  std::string spool_dir;  // where the temporary CAR files go (created; stale *.car removed)
  size_t max_queue = 1024;
  int attempts = 3;  // per item while running; 1 during shutdown
  std::chrono::milliseconds backoff{1000};
  std::chrono::milliseconds import_timeout{600'000};
  std::chrono::milliseconds drain_import_timeout{30'000};  // per item during Shutdown()
};

class KuboPublisher {
 public:
  // `fetcher` (not owned) must outlive the publisher; only its local stores are read.
  static Result<std::unique_ptr<KuboPublisher>> Create(PublisherOptions options,
                                                       fetch::Fetcher* fetcher);
  ~KuboPublisher();  // Shutdown()
  KuboPublisher(const KuboPublisher&) = delete;
  KuboPublisher& operator=(const KuboPublisher&) = delete;

  // Queues the DAGs rooted at `roots` (e.g. blob CID + layer index CID) as one CAR. `what` is for
  // logs ("blob sha256:..."). Returns false (and counts a drop) when the queue is full or the
  // publisher is shutting down. Invalid CID strings are skipped.
  bool Enqueue(std::string what, const std::vector<std::string>& roots);

  // Drains the queue (each remaining item tried once) and joins the worker. Idempotent.
  void Shutdown();

  // Prometheus text: ipfly_registry_publish_{queued,ok,failed,dropped}_total,
  // ipfly_registry_publish_blocks_total, ipfly_registry_publish_bytes_total,
  // ipfly_registry_publish_queue_length.
  std::string MetricsText() const;

 private:
  struct Item {
    std::string what;
    std::vector<mf::Cid> roots;
  };
  KuboPublisher(PublisherOptions options, fetch::Fetcher* fetcher);
  void Run();
  Status PublishOnce(const Item& item);
  Status WriteCar(const Item& item, const std::string& path, uint64_t* blocks, uint64_t* bytes);

  PublisherOptions options_;
  fetch::Fetcher* fetcher_;
  std::unique_ptr<fetch::KuboRpcClient> kubo_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  bool busy_ = false;
  uint64_t seq_ = 0;
  std::thread worker_;
  std::atomic<uint64_t> queued_{0}, ok_{0}, failed_{0}, dropped_{0}, blocks_{0}, bytes_{0};
};

}  // namespace ipfly::registry
