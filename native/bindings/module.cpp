// The only translation unit that includes pybind11. Python (avq_plugin/_validation.py)
// normalises every input; this layer only accepts exactly-typed C-contiguous arrays
// (.noconvert(): anything else is a TypeError, never a silent copy) and re-checks shapes.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "common.h"
#include "exact_index.h"
#include "index.h"
#include "io.h"
#include "kernels/kernels.h"
#include "merge.h"
#include "routing.h"

namespace py = pybind11;
using avq::ExactIndex;
using avq::Index;

namespace {

using FArray = py::array_t<float, py::array::c_style>;
using IArray = py::array_t<int64_t, py::array::c_style>;

// Thread-safety model of the binding (docs/reliability.md): every method that takes an index
// lock releases the GIL first, and no code holding an index lock ever waits for the GIL. Long
// operations (train, add) run on a native thread that holds the index lock; the calling Python
// thread keeps waiting outside the lock and delivers their progress and Ctrl-C.

// Progress and Ctrl-C for long operations. The core calls should_stop() and progress() with
// the index lock held: they only touch atomics and a small mutex of their own. poll(), on the
// Python thread with the GIL held and no index lock, checks signals and runs the callback.
class PyMonitor : public avq::Monitor {
 public:
  explicit PyMonitor(py::object cb) : cb_(std::move(cb)), has_cb_(!cb_.is_none()) {}
  bool should_stop() override { return stop_.load(std::memory_order_relaxed); }
  void progress(const char* stage, size_t done, size_t total, const std::string& info) override {
    if (!has_cb_) return;
    std::lock_guard<std::mutex> g(mu_);
    pending_.emplace_back(Report{stage, done, total, info});
  }
  // GIL held. check_signals: also look for Ctrl-C (not once the operation has finished: a
  // pending signal is then raised by the interpreter itself).
  void poll(bool check_signals) {
    if (failed()) return;
    if (check_signals && PyErr_CheckSignals() != 0) {
      err_ = std::make_unique<py::error_already_set>();
      stop_.store(true);
      return;
    }
    std::vector<Report> reports;
    {
      std::lock_guard<std::mutex> g(mu_);
      reports.swap(pending_);
    }
    if (cb_.is_none()) return;
    for (const Report& r : reports) {
      try {
        cb_(r.stage, r.done, r.total, r.info);
      } catch (py::error_already_set& e) {
        err_ = std::make_unique<py::error_already_set>(std::move(e));
        stop_.store(true);
        return;
      } catch (...) {  // never unwind past the waiting loop: the worker must be joined first
        other_ = std::current_exception();
        stop_.store(true);
        return;
      }
    }
  }
  bool failed() const { return err_ != nullptr || other_ != nullptr; }
  // GIL held: raises the exception of the callback or of the signal handler.
  [[noreturn]] void rethrow() {
    if (other_) std::rethrow_exception(other_);
    if (err_) {
      err_->restore();
      err_.reset();
    }
    throw py::error_already_set();
  }

 private:
  struct Report {
    std::string stage;
    size_t done, total;
    std::string info;
  };
  py::object cb_;
  const bool has_cb_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::vector<Report> pending_;
  std::unique_ptr<py::error_already_set> err_;
  std::exception_ptr other_;
};

// Runs f (which takes an index lock) on a native thread; the calling thread, GIL held, waits
// for it in short slices with the GIL released, and between them delivers progress and checks
// for Ctrl-C. Small jobs (`small`: well under the polling interval) run on the calling thread
// with the GIL released instead, which saves a thread start; their progress is delivered at the
// end. Call with the GIL held.
template <class F>
void run_interruptible(PyMonitor& mon, F&& f, bool small = false) {
  if (small) {
    bool interrupted = false;
    {
      py::gil_scoped_release release;
      try {
        f();
      } catch (const avq::Interrupted&) {
        interrupted = true;
      }
    }
    mon.poll(false);
    if (interrupted || mon.failed()) mon.rethrow();
    return;
  }
  struct Shared {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    std::exception_ptr error;
  };
  auto sh = std::make_shared<Shared>();
  std::thread worker([sh, &f] {
    try {
      f();
    } catch (...) {
      sh->error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> g(sh->mu);
      sh->done = true;
    }
    sh->cv.notify_all();
  });
  for (;;) {
    bool done;
    {
      py::gil_scoped_release release;
      std::unique_lock<std::mutex> lk(sh->mu);
      done = sh->cv.wait_for(lk, std::chrono::milliseconds(50), [&] { return sh->done; });
    }
    mon.poll(!done);
    if (done) break;
  }
  {
    py::gil_scoped_release release;
    worker.join();
  }
  if (sh->error) {
    try {
      std::rethrow_exception(sh->error);
    } catch (const avq::Interrupted&) {
      mon.rethrow();
    }
  }
  if (mon.failed()) mon.rethrow();  // the callback raised after the last check
}

// Releases the GIL around a call that takes an index lock.
template <class F>
auto nogil(F&& f) -> decltype(f()) {
  py::gil_scoped_release release;
  return f();
}

size_t check_k(size_t k, size_t nq) {
  if (k == 0) throw py::value_error("k must be positive");
  if (k > avq::limits::kMaxK)
    throw py::value_error("k must be <= " + std::to_string(avq::limits::kMaxK) + ", got " + std::to_string(k));
  if (nq > (size_t(1) << 40) / k) throw py::value_error("k * the number of queries is too large (search in batches)");
  return k;
}

int check_threads(int64_t n) {
  if (n < 1 || n > avq::limits::kMaxThreads)
    throw py::value_error("num_threads must be in [1, " + std::to_string(avq::limits::kMaxThreads) + "], got " +
                          std::to_string(n));
  return static_cast<int>(n);
}

size_t check_matrix(const FArray& x, size_t d, const char* what) {
  if (x.ndim() != 2) throw py::value_error(std::string(what) + " must be a 2-D array");
  if (static_cast<size_t>(x.shape(1)) != d)
    throw py::value_error(std::string(what) + " has " + std::to_string(x.shape(1)) + " columns, expected " +
                          std::to_string(d));
  return static_cast<size_t>(x.shape(0));
}

// The queries of AVQIndex.search's fast path, passed as they come: one query (d,) or a matrix
// (nq, d); the messages are those of the Python layer's checks (avq_plugin/_validation.py).
size_t check_search_queries(const FArray& q, size_t d) {
  if (q.ndim() != 1 && q.ndim() != 2)
    throw py::value_error("Q must be a 2-D array (n, d), got " + std::to_string(q.ndim()) + " dimensions");
  const size_t cols = static_cast<size_t>(q.shape(q.ndim() - 1));
  if (cols != d)
    throw py::value_error("Q has " + std::to_string(cols) + " features, but the index expects d=" + std::to_string(d));
  return q.ndim() == 1 ? 1 : static_cast<size_t>(q.shape(0));
}

const int64_t* check_ids(const std::optional<IArray>& ids, size_t n) {
  if (!ids) return nullptr;
  if (ids->ndim() != 1 || static_cast<size_t>(ids->shape(0)) != n)
    throw py::value_error("ids must be a 1-D array with one id per vector");
  return ids->data();
}

avq::Metric parse_metric(const std::string& s) {
  if (s == "dot") return avq::Metric::kDot;
  if (s == "cosine") return avq::Metric::kCosine;
  if (s == "l2") return avq::Metric::kL2;
  throw py::value_error("unknown metric '" + s + "'");
}

avq::ReorderMode parse_reorder(const std::string& s) {
  if (s == "none") return avq::ReorderMode::kNone;
  if (s == "float32") return avq::ReorderMode::kFloat32;
  if (s == "int8") return avq::ReorderMode::kInt8;
  if (s == "float16") return avq::ReorderMode::kFloat16;
  throw py::value_error("unknown reorder mode '" + s + "'");
}

avq::SpillMode parse_spill(const std::string& s) {
  if (s == "none") return avq::SpillMode::kNone;
  if (s == "soar") return avq::SpillMode::kSoar;
  throw py::value_error("spill must be 'none' or 'soar'");
}

py::tuple make_result(size_t nq, size_t k, const std::function<void(float*, int64_t*)>& fill) {
  py::array_t<float> D({nq, k});
  py::array_t<int64_t> I({nq, k});
  float* dp = D.mutable_data();
  int64_t* ip = I.mutable_data();
  {
    py::gil_scoped_release release;
    fill(dp, ip);
  }
  return py::make_tuple(D, I);
}

// A NumPy array that owns v's buffer (no copy).
template <class T>
py::array_t<T> adopt(std::vector<T>&& v, std::vector<size_t> shape) {
  auto owned = std::make_unique<std::vector<T>>(std::move(v));
  py::capsule owner(owned.get(), [](void* p) { delete static_cast<std::vector<T>*>(p); });
  const T* data = owned.release()->data();
  return py::array_t<T>(shape, data, owner);
}

py::bytes to_bytes(const std::string& s) {
  return py::bytes(s.data(), s.size());
}

std::string_view bytes_view(const py::bytes& b) {
  char* p = nullptr;
  Py_ssize_t n = 0;
  if (PyBytes_AsStringAndSize(b.ptr(), &p, &n) != 0) throw py::error_already_set();
  return std::string_view(p, static_cast<size_t>(n));
}

// Methods with the same meaning on both index types: removal, reset, ids, size, bytes, files.
template <class T>
void bind_common(py::class_<T>& cls) {
  cls.def(
         "remove",
         [](T& self, IArray ids) {
           if (ids.ndim() != 1) throw py::value_error("ids must be 1-D");
           const int64_t* p = ids.data();
           size_t n = static_cast<size_t>(ids.shape(0));
           py::gil_scoped_release release;
           return self.remove(p, n);
         },
         py::arg("ids").noconvert())
      .def("reset", &T::reset, py::call_guard<py::gil_scoped_release>())
      .def("all_ids",
           [](const T& self) {
             std::vector<int64_t> v = nogil([&] { return self.all_ids(); });
             py::array_t<int64_t> out(v.size());
             std::copy(v.begin(), v.end(), out.mutable_data());
             return out;
           })
      .def_property_readonly("ntotal", [](const T& self) { return nogil([&] { return self.ntotal(); }); })
      .def("memory_usage", &T::memory_usage, py::call_guard<py::gil_scoped_release>())
      .def("serialize",
           [](const T& self) {
             std::string s;
             {
               py::gil_scoped_release release;
               s = self.serialize();
             }
             return to_bytes(s);
           })
      .def("save", [](const T& self, const std::string& path) {
        py::gil_scoped_release release;
        avq::write_file_atomic(path, self.serialize());
      });
}

}  // namespace

PYBIND11_MODULE(_native, m) {
  m.doc() = "avq-plugin native core (private: use the avq_plugin package)";

  py::register_exception<avq::IOError>(m, "IOError", PyExc_OSError);

  m.def(
      "build_info",
      [] {
        using namespace avq::kernels;
        py::dict d;
        d["version"] = AVQ_VERSION_STR;
        py::list compiled;
        compiled.append("scalar");
#if defined(AVQ_HAVE_X86_KERNELS)
        compiled.append("avx2");
        compiled.append("avx512");
#endif
        d["compiled_simd_levels"] = compiled;
        py::list supported;
        for (SimdLevel l : {SimdLevel::kScalar, SimdLevel::kAvx2, SimdLevel::kAvx512})
          if (table_for(l)) supported.append(level_name(l));
        d["supported_simd_levels"] = supported;
        d["best_simd_level"] = level_name(best_supported_level());
        d["default_simd_level"] = level_name(default_level());
        d["simd_level"] = level_name(active().level);
        d["compiler"] = AVQ_COMPILER_STR;
        d["build_type"] = AVQ_BUILD_TYPE_STR;
        d["flags"] = AVQ_FLAGS_STR;
        d["avx2_flags"] = AVQ_AVX2_FLAGS_STR;
        d["avx512_flags"] = AVQ_AVX512_FLAGS_STR;
        d["format_version"] = avq::kFormatVersion;
        d["hardware_threads"] = avq::hardware_threads();
        return d;
      },
      "Version, compiled and supported SIMD levels, the level in use, compiler and flags.");
  m.def(
      "set_simd_level",
      [](const std::string& name) {
        avq::kernels::SimdLevel l;
        if (!avq::kernels::parse_level(name.c_str(), &l))
          throw py::value_error("unknown SIMD level '" + name + "' (expected scalar, avx2 or avx512)");
        if (!avq::kernels::set_active_level(l))
          throw py::value_error("SIMD level '" + name + "' is not available on this CPU or build");
      },
      py::arg("level"));
  m.attr("MAX_SOAR_LAMBDA") = avq::kMaxSoarLambda;
  m.def("simd_level", [] { return std::string(avq::kernels::level_name(avq::kernels::active().level)); });
  m.def(
      "limits",
      [] {
        namespace L = avq::limits;
        py::dict d;
        d["max_dim"] = L::kMaxDim;
        d["max_leaves"] = L::kMaxLeaves;
        d["max_dims_per_block"] = L::kMaxDimsPerBlock;
        d["max_iterations"] = L::kMaxIterations;
        d["max_training_sample_size"] = L::kMaxTrainingSampleSize;
        d["max_leaves_to_search"] = L::kMaxLeavesToSearch;
        d["max_reorder_k"] = L::kMaxReorderK;
        d["max_k"] = L::kMaxK;
        d["max_threads"] = L::kMaxThreads;
        d["max_seed"] = L::kMaxSeed;
        d["max_abs_value"] = L::kMaxAbsValue;
        d["min_data_norm"] = L::kMinDataNorm;
        return d;
      },
      "Limits of every parameter and value the core accepts (the Python checks use them).");
  m.def("training_sample_rows", &avq::training_sample_rows, py::arg("n"), py::arg("num_leaves"), py::arg("given") = 0,
        "Rows sampled to train an index of n vectors with num_leaves leaves (given: the "
        "training_sample_size, 0 for the default rule).");
  m.def(
      "search_leaves_multi",
      [](const std::vector<const Index*>& shards, FArray q, size_t k, const std::vector<int64_t>& job_shard,
         const std::vector<IArray>& rows, const std::vector<py::array_t<int32_t, py::array::c_style>>& leaves,
         const std::vector<IArray>& reorder_k, int64_t nthreads, const std::vector<int64_t>& job_group,
         const std::vector<IArray>& offsets) {
        if (shards.empty()) throw py::value_error("no shards to search");
        for (const Index* x : shards)
          if (x == nullptr) throw py::type_error("shards must be native indexes");
        const size_t nq = check_matrix(q, shards[0]->d(), "queries");
        check_k(k, nq);
        const int nt = check_threads(nthreads);
        const size_t J = job_shard.size();
        if (rows.size() != J || leaves.size() != J || reorder_k.size() != J)
          throw py::value_error("every job needs its shard, rows, leaves and reorder_k");
        if (!job_group.empty() && job_group.size() != J) throw py::value_error("every job needs its group");
        // Offsets given: every job's leaves are a flat list, row r's at [offsets[r], offsets[r + 1]).
        const bool flat = !offsets.empty();
        if (flat && offsets.size() != J) throw py::value_error("every job needs its leaf offsets");
        std::vector<Index::LeafJob> jobs;
        for (size_t j = 0; j < J; ++j) {
          if (job_shard[j] < 0 || static_cast<size_t>(job_shard[j]) >= shards.size())
            throw py::value_error("job " + std::to_string(j) + ": no such shard");
          if (flat ? (rows[j].ndim() != 1 || leaves[j].ndim() != 1 || reorder_k[j].ndim() != 1 ||
                      offsets[j].ndim() != 1 || offsets[j].shape(0) != rows[j].shape(0) + 1 ||
                      reorder_k[j].shape(0) != rows[j].shape(0))
                   : (rows[j].ndim() != 1 || leaves[j].ndim() != 2 || reorder_k[j].ndim() != 1 ||
                      leaves[j].shape(0) != rows[j].shape(0) || reorder_k[j].shape(0) != rows[j].shape(0)))
            throw py::value_error("job " + std::to_string(j) +
                                  (flat ? ": rows (n,), leaf offsets (n + 1,), leaves (m,), reorder_k (n,) do not match"
                                        : ": rows (n,), leaves (n, w), reorder_k (n,) do not match"));
          // No group given: each shard is its own group (searched on its own, then merged).
          const int64_t g = job_group.empty() ? job_shard[j] : job_group[j];
          if (g < 0) throw py::value_error("job " + std::to_string(j) + ": groups must be non-negative");
          jobs.push_back({static_cast<size_t>(job_shard[j]), rows[j].data(), static_cast<size_t>(rows[j].shape(0)),
                          leaves[j].data(), static_cast<size_t>(leaves[j].shape(flat ? 0 : 1)), reorder_k[j].data(),
                          static_cast<size_t>(g), flat ? offsets[j].data() : nullptr});
        }
        const float* qp = q.data();
        return make_result(
            nq, k, [&](float* D, int64_t* I) { Index::search_leaves_multi(shards, jobs, qp, nq, k, nt, D, I); });
      },
      py::arg("shards"), py::arg("q").noconvert(), py::arg("k"), py::arg("job_shard"), py::arg("rows"),
      py::arg("leaves"), py::arg("reorder_k"), py::arg("nthreads"), py::arg("job_group") = std::vector<int64_t>(),
      py::arg("offsets") = std::vector<IArray>(),
      "search_leaves() of several shards with one quantizer, by group, merged per query (index.h); with "
      "offsets, each job's leaves are a flat list (row r's at [offsets[r], offsets[r + 1])).");
  m.def(
      "merge_topk_rows",
      [](size_t nq, size_t k, const std::vector<IArray>& rows, const std::vector<FArray>& D,
         const std::vector<IArray>& I, bool l2, bool sort_single) {
        check_k(k, nq);
        if (rows.size() != D.size() || D.size() != I.size())
          throw py::value_error("merge needs as many row, score and id arrays");
        if (rows.size() > (size_t(1) << 31)) throw py::value_error("too many parts to merge");
        std::vector<avq::MergePart> parts;
        for (size_t j = 0; j < rows.size(); ++j) {
          if (rows[j].ndim() != 1 || D[j].ndim() != 2 || I[j].ndim() != 2 || D[j].shape(0) != rows[j].shape(0) ||
              I[j].shape(0) != D[j].shape(0) || I[j].shape(1) != D[j].shape(1))
            throw py::value_error("part " + std::to_string(j) + ": rows (n,), scores and ids (n, w) do not match");
          parts.push_back({rows[j].data(), static_cast<size_t>(rows[j].shape(0)), D[j].data(), I[j].data(),
                           static_cast<size_t>(D[j].shape(1))});
        }
        return make_result(
            nq, k, [&](float* Dp, int64_t* Ip) { avq::merge_topk_rows(parts, nq, k, l2, sort_single, Dp, Ip); });
      },
      py::arg("nq"), py::arg("k"), py::arg("rows"), py::arg("D"), py::arg("I"), py::arg("l2"), py::arg("sort_single"),
      "Per query, the best k of the parts' top-k lists that answer it (see merge.h).");
  m.def(
      "route_queries",
      [](const py::array_t<int32_t, py::array::c_style>& P,
         const py::array_t<int32_t, py::array::c_style>& leaf_to_shard, const IArray& leaf_sizes, size_t n_shards,
         const IArray& reorder_k, bool compact) {
        if (P.ndim() != 2) throw py::value_error("P must be a 2-d array of probed leaves");
        if (leaf_to_shard.ndim() != 1 || leaf_sizes.ndim() != 1 || leaf_sizes.shape(0) != leaf_to_shard.shape(0))
          throw py::value_error("leaf_to_shard and leaf_sizes must be 1-d arrays of one length");
        const size_t nq = static_cast<size_t>(P.shape(0)), w = static_cast<size_t>(P.shape(1));
        const size_t L = static_cast<size_t>(leaf_to_shard.shape(0));
        if (reorder_k.ndim() != 1) throw py::value_error("reorder_k must be a 1-d array (one value, or one per query)");
        const size_t nb = static_cast<size_t>(reorder_k.shape(0));
        avq::Routing r;
        {
          py::gil_scoped_release release;
          r = avq::route_queries(P.data(), nq, w, leaf_to_shard.data(), leaf_sizes.data(), L, n_shards,
                                 reorder_k.data(), nb);
        }
        auto vec = [](const auto& v) {
          using T = typename std::decay_t<decltype(v)>::value_type;
          return py::array_t<T>(static_cast<py::ssize_t>(v.size()), v.data());
        };
        py::dict jobs;
        for (size_t s = 0; s < r.shards.size(); ++s) {
          const avq::RoutedShard& x = r.shards[s];
          if (x.rows.empty()) continue;
          if (compact) {
            jobs[py::int_(s)] = py::make_tuple(vec(x.rows), vec(x.offsets), vec(x.leaves), vec(x.budget), x.scanned_sum,
                                               vec(x.scanned));
            continue;
          }
          py::array_t<int32_t> leaves({static_cast<py::ssize_t>(x.rows.size()), static_cast<py::ssize_t>(x.width)});
          int32_t* out = leaves.mutable_data();
          std::fill(out, out + x.rows.size() * x.width, -1);
          for (size_t r = 0; r < x.rows.size(); ++r)
            std::copy(x.leaves.begin() + x.offsets[r], x.leaves.begin() + x.offsets[r + 1], out + r * x.width);
          jobs[py::int_(s)] = py::make_tuple(vec(x.rows), leaves, vec(x.budget), x.scanned_sum, vec(x.scanned));
        }
        return py::make_tuple(jobs, vec(r.visited), vec(r.total));
      },
      py::arg("P").noconvert(), py::arg("leaf_to_shard").noconvert(), py::arg("leaf_sizes").noconvert(),
      py::arg("n_shards"), py::arg("reorder_k").noconvert(), py::arg("compact") = false,
      "The work of a leaf-routed search: per shard (rows, leaves (rows, width) padded with -1, budgets, "
      "candidates, candidates per row), or with compact (rows, leaf offsets, leaves, budgets, candidates, "
      "candidates per row); shards visited and candidates per query (routing.h).");
  m.def(
      "margin_reorder_k",
      [](uint64_t reorder_k, const IArray& nprobe, uint64_t asked, uint64_t ntotal) {
        if (nprobe.ndim() != 1) throw py::value_error("nprobe must be a 1-d array");
        if (asked == 0 || reorder_k == 0) throw py::value_error("reorder_k and asked must be positive");
        const size_t n = static_cast<size_t>(nprobe.shape(0));
        IArray out(static_cast<py::ssize_t>(n));
        const int64_t* p = nprobe.data();
        int64_t* o = out.mutable_data();
        const size_t rk = static_cast<size_t>(std::min(reorder_k, ntotal));
        for (size_t i = 0; i < n; ++i) {
          if (p[i] < 0) throw py::value_error("nprobe must be >= 0");
          o[i] = static_cast<int64_t>(avq::margin_reorder_k(rk, static_cast<size_t>(p[i]), asked, ntotal));
        }
        return out;
      },
      py::arg("reorder_k"), py::arg("nprobe").noconvert(), py::arg("asked"), py::arg("ntotal"),
      "search()'s leaf_margin re-ranking budget per query: min(reorder_k, ntotal) scaled by "
      "sqrt(nprobe / asked), rounded up, at most ntotal (index.h).");
  m.def("eta_exact", &avq::eta_exact, py::arg("t"), py::arg("d"),
        "Exact anisotropic weight eta for t = T / ||x|| in dimension d.");
  m.def("eta_scann", &avq::eta_scann, py::arg("t"), py::arg("d"), "ScaNN's eta = (d-1) t^2 / (1 - t^2).");

  // The parameter record of an index, with named fields (metric and reorder as their names).
  py::class_<avq::IndexParams>(m, "IndexParams")
      .def(py::init<>())
      .def_property(
          "metric", [](const avq::IndexParams& p) { return std::string(avq::metric_name(p.metric)); },
          [](avq::IndexParams& p, const std::string& s) { p.metric = parse_metric(s); })
      .def_readwrite("d", &avq::IndexParams::d)
      .def_readwrite("num_leaves", &avq::IndexParams::num_leaves)
      .def_readwrite("dims_per_block", &avq::IndexParams::dims_per_block)
      .def_readwrite("threshold", &avq::IndexParams::threshold)
      .def_readwrite("eta", &avq::IndexParams::eta)
      .def_readwrite("eta_scann", &avq::IndexParams::eta_scann)
      .def_readwrite("avq_iterations", &avq::IndexParams::avq_iterations)
      .def_readwrite("kmeans_iterations", &avq::IndexParams::kmeans_iterations)
      .def_readwrite("pq_kmeans_iterations", &avq::IndexParams::pq_kmeans_iterations)
      .def_readwrite("training_sample_size", &avq::IndexParams::training_sample_size)
      .def_readwrite("seed", &avq::IndexParams::seed)
      .def_property(
          "reorder", [](const avq::IndexParams& p) { return std::string(avq::reorder_name(p.reorder)); },
          [](avq::IndexParams& p, const std::string& s) { p.reorder = parse_reorder(s); })
      .def_readwrite("default_leaves_to_search", &avq::IndexParams::default_leaves_to_search)
      .def_readwrite("default_reorder_k", &avq::IndexParams::default_reorder_k)
      .def_readwrite("default_leaf_margin", &avq::IndexParams::default_leaf_margin)
      .def_readwrite("l2_decoded_norms", &avq::IndexParams::l2_decoded_norms)
      .def_property(
          "spill", [](const avq::IndexParams& p) { return std::string(avq::spill_name(p.spill)); },
          [](avq::IndexParams& p, const std::string& s) { p.spill = parse_spill(s); })
      .def_readwrite("soar_lambda", &avq::IndexParams::soar_lambda);

  py::class_<Index> index_cls(m, "Index");
  bind_common(index_cls);
  index_cls.def(py::init<const avq::IndexParams&>(), py::arg("params"))
      .def(
          "train",
          [](Index& self, FArray x, int64_t nthreads, py::object callback) {
            size_t n = check_matrix(x, self.d(), "X");
            const int nt = check_threads(nthreads);
            PyMonitor mon(std::move(callback));
            const float* p = x.data();
            run_interruptible(mon, [&] { self.train(p, n, nt, &mon); });
          },
          py::arg("x").noconvert(), py::arg("nthreads"), py::arg("callback") = py::none())
      .def(
          "add",
          [](Index& self, FArray x, std::optional<IArray> ids, int64_t nthreads, py::object callback) {
            size_t n = check_matrix(x, self.d(), "X");
            const int64_t* ip = check_ids(ids, n);
            const int nt = check_threads(nthreads);
            PyMonitor mon(std::move(callback));
            const float* p = x.data();
            // Encoding costs about 1 us per vector and dimension block: below 64k blocks, inline.
            const bool small = n * self.num_blocks() <= (size_t(1) << 16);
            run_interruptible(
                mon, [&] { self.add(p, n, ip, nt, &mon); }, small);
          },
          py::arg("x").noconvert(), py::arg("ids").noconvert() = py::none(), py::arg("nthreads") = 1,
          py::arg("callback") = py::none())
      .def(
          "search",
          [](const Index& self, FArray q, size_t k, size_t leaves_to_search, size_t reorder_k, int64_t nthreads,
             float leaf_margin) {
            size_t nq = check_search_queries(q, self.d());
            check_k(k, nq);
            const int nt = check_threads(nthreads);
            const float* qp = q.data();
            return make_result(nq, k, [&](float* D, int64_t* I) {
              self.search(qp, nq, k, leaves_to_search, reorder_k, nt, D, I, leaf_margin);
            });
          },
          py::arg("q").noconvert(), py::arg("k"), py::arg("leaves_to_search"), py::arg("reorder_k"),
          py::arg("nthreads"), py::arg("leaf_margin") = std::numeric_limits<float>::quiet_NaN())
      .def(
          "probe",
          [](const Index& self, FArray q, size_t leaves_to_search, int nthreads) {
            size_t nq = check_matrix(q, self.params().d, "queries");
            const size_t w = std::max<size_t>(1, std::min(leaves_to_search, self.num_leaves()));
            py::array_t<int32_t> out({nq, w});
            const float* qp = q.data();
            int32_t* op = out.mutable_data();
            py::gil_scoped_release release;
            self.probe(qp, nq, leaves_to_search, nthreads, op);
            return out;
          },
          py::arg("q").noconvert(), py::arg("leaves_to_search"), py::arg("nthreads"),
          "The leaves search() probes per query, best first: int32 (nq, min(leaves_to_search, L)).")
      .def(
          "probe_margin",
          [](const Index& self, FArray q, size_t leaves_to_search, float leaf_margin, int nthreads) {
            size_t nq = check_matrix(q, self.params().d, "queries");
            const float* qp = q.data();
            size_t width = 0;
            std::vector<int32_t> out;
            {
              py::gil_scoped_release release;
              out = self.probe_margin(qp, nq, leaves_to_search, leaf_margin, nthreads, width);
            }
            py::array_t<int32_t> arr({nq, width});
            std::copy(out.begin(), out.end(), arr.mutable_data());
            return arr;
          },
          py::arg("q").noconvert(), py::arg("leaves_to_search"), py::arg("leaf_margin"), py::arg("nthreads"),
          "The leaves search() with leaf_margin probes per query, best first, padded with -1: int32 (nq, widest).")
      .def(
          "search_leaves",
          [](const Index& self, FArray q, size_t k, py::array_t<int32_t, py::array::c_style> leaves, IArray reorder_k,
             int nthreads) {
            size_t nq = check_matrix(q, self.params().d, "queries");
            if (leaves.ndim() != 2 || static_cast<size_t>(leaves.shape(0)) != nq)
              throw py::value_error("leaves must be a 2-D int32 array with one row per query");
            if (reorder_k.ndim() != 1 || static_cast<size_t>(reorder_k.shape(0)) != nq)
              throw py::value_error("reorder_k must be a 1-D int64 array with one value per query");
            const size_t w = static_cast<size_t>(leaves.shape(1));
            const float* qp = q.data();
            const int32_t* lp = leaves.data();
            const int64_t* rp = reorder_k.data();
            return make_result(nq, k,
                               [&](float* D, int64_t* I) { self.search_leaves(qp, nq, k, lp, w, rp, nthreads, D, I); });
          },
          py::arg("q").noconvert(), py::arg("k"), py::arg("leaves").noconvert(), py::arg("reorder_k").noconvert(),
          py::arg("nthreads"), "search() restricted to the given leaves per query (-1 entries skipped).")
      .def(
          "search_float_lut",
          [](const Index& self, FArray q, size_t k, size_t leaves_to_search, int64_t nthreads) {
            size_t nq = check_matrix(q, self.d(), "queries");
            check_k(k, nq);
            const int nt = check_threads(nthreads);
            const float* qp = q.data();
            return make_result(
                nq, k, [&](float* D, int64_t* I) { self.search_float_lut(qp, nq, k, leaves_to_search, nt, D, I); });
          },
          py::arg("q").noconvert(), py::arg("k"), py::arg("leaves_to_search"), py::arg("nthreads"),
          "Codes-only search with float lookup tables (Faiss's scores for the same codes; slower).")
      .def(
          "get_codes",
          [](const Index& self, IArray ids) {
            size_t n = static_cast<size_t>(ids.shape(0));
            py::array_t<uint8_t> out({n, self.num_blocks()});
            const int64_t* ip = ids.data();
            uint8_t* op = out.mutable_data();
            nogil([&] { self.get_codes(ip, n, op); });
            return out;
          },
          py::arg("ids").noconvert())
      .def(
          "get_vectors",
          [](const Index& self, IArray ids) {
            if (ids.ndim() != 1) throw py::value_error("ids must be 1-D");
            size_t n = static_cast<size_t>(ids.shape(0));
            // Bounded before allocating: at most one row per stored vector (re-checked under the lock).
            const size_t ntotal = nogil([&] { return self.ntotal(); });
            if (n > ntotal)
              throw py::value_error("asked for " + std::to_string(n) + " vectors, the index holds " +
                                    std::to_string(ntotal));
            py::array_t<float> out({n, size_t(self.d())});
            const int64_t* ip = ids.data();
            float* op = out.mutable_data();
            nogil([&] { self.get_vectors(ip, n, op); });
            return out;
          },
          py::arg("ids").noconvert(), "The float32 re-ranking vectors of the given ids (n, d).")
      .def(
          "all_vectors",
          [](const Index& self) {
            std::vector<int64_t> ids;
            std::vector<float> vecs;
            nogil([&] { self.all_vectors(ids, vecs); });
            const size_t n = ids.size(), d = self.d();
            return py::make_tuple(adopt(std::move(ids), {n}), adopt(std::move(vecs), {n, d}));
          },
          "(ids, vectors (ntotal, d)): every float32 re-ranking vector, in increasing id order.")
      .def(
          "contains",
          [](const Index& self, IArray ids) {
            size_t n = static_cast<size_t>(ids.shape(0));
            py::array_t<uint8_t> out(n);
            self.contains(ids.data(), n, out.mutable_data());
            return out;
          },
          py::arg("ids").noconvert())
      .def(
          "get_leaves",
          [](const Index& self, IArray ids) {
            size_t n = static_cast<size_t>(ids.shape(0));
            py::array_t<int64_t> out(n);
            const int64_t* ip = ids.data();
            int64_t* op = out.mutable_data();
            nogil([&] { self.get_leaves(ip, n, op); });
            return out;
          },
          py::arg("ids").noconvert())
      .def(
          "get_spill_leaves",
          [](const Index& self, IArray ids) {
            size_t n = static_cast<size_t>(ids.shape(0));
            py::array_t<int64_t> out(n);
            const int64_t* p = ids.data();
            int64_t* o = out.mutable_data();
            {
              py::gil_scoped_release release;
              self.get_spill_leaves(p, n, o);
            }
            return out;
          },
          py::arg("ids").noconvert(), "Leaf of each id's SOAR copy (-1: none).")
      .def(
          "set_quantizer",
          [](Index& self, FArray probe, FArray resid, FArray codebooks) {
            const size_t d = self.d();
            size_t L = check_matrix(probe, d, "probe centres");
            if (check_matrix(resid, d, "residual centres") != L)
              throw py::value_error("probe and residual centres must have the same number of rows");
            if (codebooks.ndim() != 1 || static_cast<size_t>(codebooks.shape(0)) != 16 * d)
              throw py::value_error("codebooks must be a 1-D array of 16 * d floats");
            const float* pp = probe.data();
            const float* rp = resid.data();
            const float* cp = codebooks.data();
            py::gil_scoped_release release;
            self.set_quantizer(pp, rp, L, cp);
          },
          py::arg("probe").noconvert(), py::arg("resid").noconvert(), py::arg("codebooks").noconvert(),
          "Install probe centres (L, d), residual centres (L, d) and codebooks (16 d) in an empty index.")
      .def(
          "add_codes",
          [](Index& self, py::array_t<uint8_t, py::array::c_style> codes, IArray leaves, std::optional<IArray> ids,
             std::optional<FArray> norms2) {
            if (codes.ndim() != 2 || static_cast<size_t>(codes.shape(1)) != self.num_blocks())
              throw py::value_error("codes must be a 2-D uint8 array with num_blocks columns");
            const size_t n = static_cast<size_t>(codes.shape(0));
            if (leaves.ndim() != 1 || static_cast<size_t>(leaves.shape(0)) != n)
              throw py::value_error("leaves must be a 1-D array with one leaf per code");
            const int64_t* ip = check_ids(ids, n);
            const float* np2 = nullptr;
            if (norms2) {
              if (norms2->ndim() != 1 || static_cast<size_t>(norms2->shape(0)) != n)
                throw py::value_error("norms2 must be a 1-D array with one value per code");
              np2 = norms2->data();
            }
            const uint8_t* cp = codes.data();
            const int64_t* lp = leaves.data();
            py::gil_scoped_release release;
            self.add_codes(cp, lp, n, ip, np2);
          },
          py::arg("codes").noconvert(), py::arg("leaves").noconvert(), py::arg("ids").noconvert() = py::none(),
          py::arg("norms2").noconvert() = py::none(),
          "Add pre-computed 4-bit codes (n, num_blocks) in the given leaves (reorder='none' only).")
      .def("probe_centers",
           [](const Index& self) {
             std::vector<float> c = nogil([&] { return self.probe_centers(); });
             py::array_t<float> out(c.size());
             std::copy(c.begin(), c.end(), out.mutable_data());
             return out;
           })
      .def("leaf_sizes",
           [](const Index& self) {
             std::vector<uint64_t> v = nogil([&] { return self.leaf_sizes(); });
             py::array_t<int64_t> out(v.size());
             std::copy(v.begin(), v.end(), out.mutable_data());
             return out;
           })
      .def("codebooks",
           [](const Index& self) {
             const std::vector<float> c = nogil([&] { return self.codebooks(); });
             py::array_t<float> out(c.size());
             std::copy(c.begin(), c.end(), out.mutable_data());
             return out;
           })
      .def("centers",
           [](const Index& self) {
             const std::vector<float> c = nogil([&] { return self.centers(); });
             py::array_t<float> out(c.size());
             std::copy(c.begin(), c.end(), out.mutable_data());
             return out;
           })
      .def("train_stats",
           [](const Index& self) {
             avq::TrainStats s = nogil([&] { return self.train_stats(); });
             py::dict d;
             d["eta_min"] = s.eta_min;
             d["eta_max"] = s.eta_max;
             d["eta_mean"] = s.eta_mean;
             d["threshold"] = s.threshold;
             d["sample_size"] = s.sample_size;
             d["loss"] = s.loss;
             return d;
           })
      .def(
          "params", [](const Index& self) { return nogil([&] { return self.params(); }); }, "A copy of the parameters.")
      .def(
          "set_default_search_params",
          [](Index& self, uint32_t leaves_to_search, uint32_t reorder_k, double leaf_margin) {
            if (leaves_to_search == 0 || reorder_k == 0)
              throw py::value_error("the default leaves_to_search and reorder_k must be positive");
            py::gil_scoped_release release;
            self.set_default_search_params(leaves_to_search, reorder_k, leaf_margin);
          },
          py::arg("leaves_to_search"), py::arg("reorder_k"), py::arg("leaf_margin") = -1.0,
          "Search defaults stored with the index (leaf_margin negative: none).")
      .def_property_readonly("d", &Index::d)
      .def_property_readonly("is_trained", [](const Index& self) { return nogil([&] { return self.is_trained(); }); })
      .def_property_readonly("num_leaves", [](const Index& self) { return nogil([&] { return self.num_leaves(); }); })
      .def_property_readonly("num_blocks", &Index::num_blocks)
      .def_property_readonly("code_size", &Index::code_size)
      .def_property_readonly("is_mapped", [](const Index& self) { return nogil([&] { return self.is_mapped(); }); })
      .def_static("deserialize",
                  [](const py::bytes& b) {
                    std::string_view v = bytes_view(b);
                    py::gil_scoped_release release;
                    return Index::deserialize(reinterpret_cast<const uint8_t*>(v.data()), v.size(), nullptr);
                  })
      .def_static(
          "load",
          [](const std::string& path, bool mmap) {
            py::gil_scoped_release release;
            auto map = avq::Mapping::open(path);
            return Index::deserialize(map->data(), map->size(), mmap ? map : nullptr);
          },
          py::arg("path"), py::arg("mmap") = false);

  py::class_<ExactIndex> exact_cls(m, "ExactIndex");
  bind_common(exact_cls);
  exact_cls
      .def(py::init([](const std::string& metric, uint32_t d) {
             return std::make_unique<ExactIndex>(parse_metric(metric), d);
           }),
           py::arg("metric"), py::arg("d"))
      .def(
          "add",
          [](ExactIndex& self, FArray x, std::optional<IArray> ids) {
            size_t n = check_matrix(x, self.d(), "X");
            const int64_t* ip = check_ids(ids, n);
            const float* p = x.data();
            py::gil_scoped_release release;
            self.add(p, n, ip);
          },
          py::arg("x").noconvert(), py::arg("ids").noconvert() = py::none())
      .def(
          "search",
          [](const ExactIndex& self, FArray q, size_t k, int64_t nthreads) {
            size_t nq = check_matrix(q, self.d(), "queries");
            check_k(k, nq);
            const int nt = check_threads(nthreads);
            const float* qp = q.data();
            return make_result(nq, k, [&](float* D, int64_t* I) { self.search(qp, nq, k, nt, D, I); });
          },
          py::arg("q").noconvert(), py::arg("k"), py::arg("nthreads"))
      .def_property_readonly("d", &ExactIndex::d)
      .def_property_readonly("metric",
                             [](const ExactIndex& self) { return std::string(avq::metric_name(self.metric())); })
      .def_static("deserialize",
                  [](const py::bytes& b) {
                    std::string_view v = bytes_view(b);
                    py::gil_scoped_release release;
                    return ExactIndex::deserialize(reinterpret_cast<const uint8_t*>(v.data()), v.size());
                  })
      .def_static(
          "load",
          [](const std::string& path) {
            py::gil_scoped_release release;
            auto map = avq::Mapping::open(path);
            return ExactIndex::deserialize(map->data(), map->size());
          },
          py::arg("path"));
}
