#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "common.h"

namespace avq {

int hardware_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

namespace {

// A grow-on-demand pool of workers that run queued tasks. Workers live until process exit.
class Pool {
 public:
  static Pool& instance() {
    // Leaked on purpose: joining threads during static destruction can deadlock at interpreter exit.
    static Pool* pool = new Pool();
    return *pool;
  }

  void ensure_workers(size_t n) {
    std::lock_guard<std::mutex> lock(mu_);
    n = std::min<size_t>(n, 256);
    while (workers_.size() < n) {
      workers_.emplace_back([this] { loop(); });
      workers_.back().detach();
    }
  }

  void submit(std::function<void()> task) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      tasks_.push_back(std::move(task));
    }
    cv_.notify_one();
  }

 private:
  void loop() {
    for (;;) {
      std::function<void()> task;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return !tasks_.empty(); });
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> workers_;
};

// Shared between the caller and its helper tasks. Helpers that start after the caller has
// finished (closed) return at once, so the caller never waits for a busy pool.
struct ForState {
  const std::function<void(size_t, size_t)>* fn;
  size_t n, chunk;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mu;
  std::condition_variable cv;
  bool closed = false;
  int active = 0;
  std::exception_ptr error;

  void work() {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      size_t b = next.fetch_add(chunk);
      if (b >= n) return;
      size_t e = std::min(n, b + chunk);
      try {
        (*fn)(b, e);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        failed.store(true);
        return;
      }
    }
  }
};

}  // namespace

void parallel_for(size_t n, int nthreads, size_t chunk, const std::function<void(size_t, size_t)>& fn) {
  if (n == 0) return;
  if (chunk == 0) chunk = 1;
  size_t nchunks = (n + chunk - 1) / chunk;
  size_t helpers = nthreads > 1 ? std::min<size_t>(static_cast<size_t>(nthreads) - 1, nchunks - 1) : 0;
  if (helpers == 0) {
    for (size_t b = 0; b < n; b += chunk) fn(b, std::min(n, b + chunk));
    return;
  }
  auto st = std::make_shared<ForState>();
  st->fn = &fn;
  st->n = n;
  st->chunk = chunk;
  Pool& pool = Pool::instance();
  pool.ensure_workers(helpers);
  for (size_t h = 0; h < helpers; ++h) {
    pool.submit([st] {
      {
        std::lock_guard<std::mutex> lock(st->mu);
        if (st->closed) return;
        ++st->active;
      }
      st->work();
      {
        std::lock_guard<std::mutex> lock(st->mu);
        --st->active;
      }
      st->cv.notify_all();
    });
  }
  st->work();
  std::unique_lock<std::mutex> lock(st->mu);
  st->closed = true;
  st->cv.wait(lock, [&] { return st->active == 0; });
  if (st->error) std::rethrow_exception(st->error);
}

}  // namespace avq
