// A fixed-size thread pool. Tasks run in FIFO order; Submit returns a std::future. The destructor
// finishes queued tasks and joins all threads (no detached threads anywhere in ipfly).
// The queue is unbounded on purpose: bounding belongs to the callers (in-flight limits), which
// avoids deadlocks between pools (the EdenFS lesson).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <type_traits>
#include <vector>

namespace ipfly {

class ThreadPool {
 public:
  explicit ThreadPool(size_t threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  template <typename F>
  auto Submit(F&& f) -> std::future<std::invoke_result_t<F>> {
    using R = std::invoke_result_t<F>;
    auto task = std::make_shared<std::packaged_task<R()>>(std::forward<F>(f));
    std::future<R> fut = task->get_future();
    Post([task] { (*task)(); });
    return fut;
  }

  // Fire-and-forget; the task must not throw.
  void Post(std::function<void()> fn);
  size_t size() const { return threads_.size(); }

 private:
  void Loop();
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> queue_;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace ipfly
