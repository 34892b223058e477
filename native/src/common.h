// Small shared pieces of the core: errors, the training monitor, the thread pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

namespace avq {

// Bad arguments (becomes ValueError in Python).
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Raised when Monitor::should_stop() asked to stop a long operation (Ctrl-C in Python).
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

// Progress and cancellation hooks for long operations (training, add). Called only from the
// thread that started the operation, never from pool workers. The core holds no Python state:
// the binding implements these by briefly re-acquiring the GIL.
class Monitor {
 public:
  virtual ~Monitor() = default;
  // Return true to abort the operation; the core then throws Interrupted.
  virtual bool should_stop() { return false; }
  // stage: short name ("partition k-means", "pq codebooks", "avq", "encode"); done/total: progress.
  virtual void progress(const char* /*stage*/, size_t /*done*/, size_t /*total*/, const std::string& /*info*/) {}
};

inline void check_stop(Monitor* m) {
  if (m != nullptr && m->should_stop()) throw Interrupted();
}

// Number of hardware threads (at least 1).
int hardware_threads();

// Runs fn(begin, end) over [0, n) in chunks of `chunk` items on up to `nthreads` threads of the
// process-wide pool; the calling thread takes part. Blocks until all chunks are done. An exception
// thrown by fn stops the remaining chunks and is rethrown on the caller. Safe to call concurrently
// from several threads (the callers never wait for each other's chunks). Which thread runs which
// chunk is not deterministic: callers must make results independent of it.
void parallel_for(size_t n, int nthreads, size_t chunk, const std::function<void(size_t, size_t)>& fn);

}  // namespace avq
