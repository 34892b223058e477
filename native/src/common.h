// Small shared pieces of the core: errors, the training monitor, the thread pool.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>

namespace avq {

// Limits of every size, count and value that reaches the core, defined once: the constructors,
// the file loader and search check them, and the binding exports them to the Python checks
// (avq_plugin._native.limits()).
namespace limits {
constexpr uint32_t kMaxDim = 1u << 20;
constexpr uint32_t kMaxLeaves = (1u << 31) - 1;  // leaf numbers are 32-bit (and positive in int64)
constexpr uint32_t kMaxDimsPerBlock = 8;
constexpr uint32_t kMaxIterations = 1000;  // avq, k-means and PQ k-means iterations
constexpr uint64_t kMaxTrainingSampleSize = 0xFFFFFFFFull;
constexpr uint64_t kMaxLeavesToSearch = kMaxLeaves;
constexpr uint64_t kMaxReorderK = 0xFFFFFFFFull;  // also the range of the stored default
constexpr uint64_t kMaxK = (uint64_t(1) << 31) - 1;
constexpr int kMaxThreads = 1024;
constexpr uint64_t kMaxSeed = uint64_t(std::numeric_limits<int64_t>::max());
// Accepted numeric range of vectors under the scale-dependent metrics (dot, l2): every
// coordinate |x| <= kMaxAbsValue, so that squared norms, inner products and squared distances of
// up to kMaxDim dimensions stay finite in float32. The training data of an AVQ index must not be
// tiny as a whole: its largest norm must be >= kMinDataNorm (below, its squared norms, k-means
// distances and lookup tables would be subnormal floats). Single small or subnormal vectors are
// fine (they are near zero relative to the rest), and so are small queries (dot queries are
// scaled by a power of two inside the search, which is exact). Cosine normalises in double and
// accepts any finite nonzero vector.
constexpr double kMaxAbsValue = 1e15;
constexpr double kMinDataNorm = 1e-15;
// Per-thread search scratch above this is released after each call (it is bounded by the
// index's size, but must not be kept at its high-water mark forever).
constexpr size_t kScratchKeepBytes = size_t(8) << 20;
}  // namespace limits

// Rows sampled to train an index of n vectors with L leaves, defined once (the sharded index
// gathers its sample with it, through avq_plugin._native.training_sample_rows): `given` when
// nonzero (at most n); else enough rows for the partitioner, 64 per leaf and at least 100,000
// (at most n). Never fewer than the leaves (when n allows).
inline size_t training_sample_rows(size_t n, size_t L, uint64_t given) {
  const size_t S = given ? std::min<size_t>(n, given) : std::min<size_t>(n, std::max<size_t>(100000, 64 * L));
  return std::max(S, std::min(n, L));
}

// Bad arguments (becomes ValueError in Python).
struct InvalidArgument : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Raised when Monitor::should_stop() asked to stop a long operation (Ctrl-C in Python).
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

// Progress and cancellation hooks for long operations (training, add). Called only from the
// thread that started the operation, never from pool workers, and with the index's exclusive
// lock held: implementations must neither block on anything another thread may hold while
// waiting for that lock (the GIL above all) nor call back into Python. The binding records the
// state in atomics and delivers it from the Python thread, outside the lock.
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
