#include "index.h"

#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>
#include <numeric>
#include <random>

#include "io.h"
#include "kernels/kernels.h"
#include "kmeans.h"

namespace avq {

const char* metric_name(Metric m) {
  switch (m) {
    case Metric::kDot:
      return "dot";
    case Metric::kCosine:
      return "cosine";
    case Metric::kL2:
      return "l2";
  }
  return "?";
}

const char* reorder_name(ReorderMode r) {
  switch (r) {
    case ReorderMode::kNone:
      return "none";
    case ReorderMode::kFloat32:
      return "float32";
    case ReorderMode::kInt8:
      return "int8";
  }
  return "?";
}

namespace {

constexpr float kPadBest = std::numeric_limits<float>::max();

struct Cand {
  float score;
  uint32_t leaf, pos;
};

inline bool better(const Cand& a, const Cand& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.leaf != b.leaf) return a.leaf < b.leaf;
  return a.pos < b.pos;
}

// SOAR: replaces the references of spilled copies by their primary copy's, drops repeated
// vectors (keeping the first occurrence, order kept), then keeps the `want` best (by `better`;
// `sorted`: cands are sorted best first). set: scratch for an open-addressing set.
void dedup_spilled(std::vector<Cand>& cands, const SpillStore& sp, std::vector<uint64_t>& set, size_t want,
                   bool sorted) {
  size_t cap = 64;
  int shift = 58;
  while (cap < 2 * cands.size()) {
    cap <<= 1;
    --shift;
  }
  set.assign(cap, 0);
  size_t w = 0;
  for (size_t i = 0; i < cands.size(); ++i) {
    Cand c = cands[i];
    if (c.leaf & kSpillLeafFlag) {
      const uint64_t r = sp.lists[c.leaf & ~kSpillLeafFlag].ref[c.pos];
      c.leaf = static_cast<uint32_t>(r >> 32);
      c.pos = static_cast<uint32_t>(r);
    }
    const uint64_t key = ((uint64_t(c.leaf) << 32) | c.pos) + 1;  // 0 marks an empty slot
    size_t h = static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift);
    while (set[h] != 0 && set[h] != key) h = (h + 1) & (cap - 1);
    if (set[h] == key) continue;
    set[h] = key;
    cands[w++] = c;
  }
  cands.resize(w);
  if (w > want) {
    if (!sorted) std::nth_element(cands.begin(), cands.begin() + (want - 1), cands.end(), better);
    cands.resize(want);
  }
}

constexpr size_t kTopNSlack = 256;  // top-N buffer room above cap before a cut

// The (k+1)-th largest of src[0..n) (k < n), src unchanged: quickselect whose order-keeping
// three-way partitions are the SIMD kernel partition_f32. scratch: 3 (n + 16) floats.
float kth_largest_f32(const float* src, size_t n, size_t k, std::vector<float>& scratch) {
  const kernels::KernelTable& kt = kernels::active();
  const size_t stride = n + 16;
  if (scratch.size() < 3 * stride) scratch.resize(3 * stride);
  float* buf[3] = {scratch.data(), scratch.data() + stride, scratch.data() + 2 * stride};
  const float* a = src;
  int cur = -1;  // which buffer holds a (-1: src)
  while (n > 24) {
    float x = a[0], y = a[n / 2], z = a[n - 1];
    float pivot = std::max(std::min(x, y), std::min(std::max(x, y), z));  // median of three
    const int o1 = cur == 0 ? 1 : 0, o2 = cur == 2 ? 1 : 2;
    size_t g = 0, l = 0;
    kt.partition_f32(a, n, pivot, buf[o1], buf[o2], &g, &l);
    if (k < g) {
      a = buf[o1];
      cur = o1;
      n = g;
      continue;
    }
    if (k < n - l) return pivot;  // k falls among the values equal to the pivot
    k -= n - l;
    a = buf[o2];
    cur = o2;
    n = l;
  }
  float tail[24];
  std::copy(a, a + n, tail);
  std::sort(tail, tail + n, std::greater<float>());
  return tail[k];
}

// The (k+1)-th largest value of v (k < v.size()); v and aux are scratch (v is scrambled).
template <class T>
T kth_largest(std::vector<T>& v, size_t k, std::vector<T>& aux) {
  aux.resize(v.size());
  T* a = v.data();
  T* b = aux.data();
  size_t n = v.size();
  while (n > 24) {
    T x = a[0], y = a[n / 2], z = a[n - 1];
    T pivot = std::max(std::min(x, y), std::min(std::max(x, y), z));  // median of three
    size_t gt = 0, eq = 0;
    for (size_t i = 0; i < n; ++i) {  // values > pivot to the front of b
      b[gt] = a[i];
      gt += a[i] > pivot;
    }
    if (k < gt) {
      std::swap(a, b);
      n = gt;
      continue;
    }
    for (size_t i = 0; i < n; ++i) eq += a[i] == pivot;
    if (k < gt + eq) return pivot;
    size_t lt = 0;
    for (size_t i = 0; i < n; ++i) {  // values < pivot
      b[lt] = a[i];
      lt += a[i] < pivot;
    }
    k -= gt + eq;
    std::swap(a, b);
    n = lt;
  }
  std::sort(a, a + n, std::greater<T>());
  return a[k];
}

// Keeps the `cap` best approximate scores of a query. Survivors of each leaf's SIMD threshold
// test are appended in bulk to a structure-of-arrays buffer; when it reaches cap + slack, it is
// cut back to the cap best (a branch-free selection) and the threshold rises to the cut (the
// scheme of ScaNN's FastTopNeighbors: amortised O(1) per candidate).
class TopN {
 public:
  void reset(size_t cap) {
    cap_ = cap;
    n_ = 0;
    limit_ = cap + std::max<size_t>(cap, kTopNSlack);
    thr_ = -std::numeric_limits<float>::infinity();
  }
  float threshold() const { return thr_; }
  // Appends the candidates (sc[c], position idx[c] in `leaf`) whose score beats the threshold.
  void append(const float* sc, const uint32_t* idx, size_t cnt, uint32_t leaf) {
    if (n_ + cnt > scores_.size()) {
      scores_.resize(n_ + cnt + limit_);
      refs_.resize(n_ + cnt + limit_);
    }
    float* s = scores_.data() + n_;
    uint64_t* r = refs_.data() + n_;
    const uint64_t hi = uint64_t(leaf) << 32;
    const float thr = thr_;
    size_t w = 0;
    for (size_t c = 0; c < cnt; ++c) {
      s[w] = sc[c];
      r[w] = hi | idx[c];
      w += sc[c] > thr;
    }
    n_ += w;
    if (n_ >= limit_) shrink();
  }
  size_t footprint() const {
    return scores_.capacity() * sizeof(float) + refs_.capacity() * sizeof(uint64_t) + out_.capacity() * sizeof(Cand) +
           sel_.capacity() * sizeof(float);
  }
  // At most cap entries; sorted best first when `sorted`.
  std::vector<Cand>& finish(bool sorted) {
    if (n_ > cap_) shrink();
    out_.resize(n_);
    for (size_t i = 0; i < n_; ++i)
      out_[i] = {scores_[i], static_cast<uint32_t>(refs_[i] >> 32), static_cast<uint32_t>(refs_[i])};
    if (sorted) std::sort(out_.begin(), out_.end(), better);
    return out_;
  }

 private:
  void shrink() {
    // The cap-th best score, then an order-keeping compaction: everything above the cut, then
    // ties with it (earliest first) up to cap.
    const float cut = kth_largest_f32(scores_.data(), n_, cap_ - 1, sel_);
    size_t above = 0;
    for (size_t i = 0; i < n_; ++i) above += scores_[i] > cut;
    // Ties with the cut are kept up to (not including) position tie_end: find it first, so that
    // the compaction below has no loop-carried dependency but its write cursor.
    size_t need = cap_ - above, tie_end = 0;
    for (size_t i = 0; i < n_ && need > 0; ++i)
      if (scores_[i] == cut && --need == 0) tie_end = i + 1;
    size_t w = 0;
    for (size_t i = 0; i < n_; ++i) {
      const float v = scores_[i];
      const bool keep = (v > cut) | ((v == cut) & (i < tie_end));
      scores_[w] = v;
      refs_[w] = refs_[i];
      w += keep;
    }
    n_ = w;
    thr_ = cut;
  }

 private:
  size_t cap_ = 1, limit_ = 2, n_ = 0;
  std::vector<float> scores_;
  std::vector<uint64_t> refs_;  // (leaf << 32) | position
  std::vector<Cand> out_;
  std::vector<float> sel_;
  float thr_ = 0;
};

inline void set_nibble(uint8_t* group, size_t m, size_t j, uint8_t code) {
  uint8_t& b = group[m * 16 + (j & 15)];
  if (j < 16)
    b = static_cast<uint8_t>((b & 0xF0) | code);
  else
    b = static_cast<uint8_t>((b & 0x0F) | (code << 4));
}

inline uint8_t get_nibble(const uint8_t* group, size_t m, size_t j) {
  uint8_t b = group[m * 16 + (j & 15)];
  return j < 16 ? (b & 0x0F) : (b >> 4);
}

double norm_of(const float* x, size_t d) {
  double s = 0;
  for (size_t j = 0; j < d; ++j) s += double(x[j]) * x[j];
  return std::sqrt(s);
}

}  // namespace

void advise_huge_pages(void* p, size_t bytes) {
#if defined(MADV_HUGEPAGE)
  const uintptr_t kHuge = uintptr_t(2) << 20;
  uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);  // advice only: failure is harmless
#else
  (void)p;
  (void)bytes;
#endif
}

struct Index::Scratch {
  std::vector<float> q, leaf_scores, lut, exact, w;
  float q_unscale = 1.f;  // dot: the prepared query is q / q_unscale (a power of two)
  std::vector<uint32_t> idx;
  std::vector<std::pair<float, uint32_t>> leaf_sel;
  std::vector<uint64_t> keys, keys_tmp, keys_aux;
  std::vector<uint8_t> lut8;
  std::vector<uint16_t> acc;
  std::vector<float> sc;
  std::vector<const float*> rows;
  std::vector<const int8_t*> rows8;
  std::vector<uint64_t> seen;  // SOAR: de-duplication hash set of primary references
  TopN topn;
  const int32_t* given_leaves = nullptr;  // search_leaves: the leaves to scan instead of selecting
  size_t given_n = 0;
  size_t footprint() const {
    return (q.capacity() + leaf_scores.capacity() + lut.capacity() + exact.capacity() + w.capacity() + sc.capacity()) *
               sizeof(float) +
           idx.capacity() * sizeof(uint32_t) + leaf_sel.capacity() * sizeof(leaf_sel[0]) +
           (keys.capacity() + keys_tmp.capacity() + keys_aux.capacity()) * sizeof(uint64_t) + lut8.capacity() +
           acc.capacity() * sizeof(uint16_t) + (rows.capacity() + rows8.capacity()) * sizeof(void*) + topn.footprint();
  }
};

// Per-thread scratch lives as long as its (pool) thread: beyond a few MB it is released after
// each call, so that one large search does not pin its high-water mark forever.
void Index::release_large_scratch(Scratch& s) {
  if (s.footprint() > limits::kScratchKeepBytes) s = Scratch();
}

Index::Index(const IndexParams& p) : p_(p) {
  // One rule per field, for the Python constructor and the file loader alike.
  auto at_most = [](const char* name, uint64_t v, uint64_t max) {
    if (v > max)
      throw InvalidArgument(std::string(name) + " must be <= " + std::to_string(max) + ", got " + std::to_string(v));
  };
  if (p_.d == 0) throw InvalidArgument("d must be positive");
  at_most("d", p_.d, limits::kMaxDim);
  if (static_cast<uint32_t>(p_.metric) > 2) throw InvalidArgument("unknown metric");
  if (static_cast<uint32_t>(p_.reorder) > 2) throw InvalidArgument("unknown reorder mode");
  if (p_.l2_decoded_norms && p_.reorder != ReorderMode::kNone)
    throw InvalidArgument("l2_decoded_norms needs reorder='none' (re-scoring uses the exact norms)");
  at_most("num_leaves", p_.num_leaves, limits::kMaxLeaves);
  if (p_.dims_per_block < 1) throw InvalidArgument("dims_per_block must be >= 1");
  at_most("dims_per_block", p_.dims_per_block, limits::kMaxDimsPerBlock);
  if (!(std::isnan(p_.threshold) || (std::isfinite(p_.threshold) && p_.threshold >= 0)))
    throw InvalidArgument("threshold must be NaN (none) or a finite number >= 0");
  if (!(p_.eta == 0 || (std::isfinite(p_.eta) && p_.eta >= 1)))
    throw InvalidArgument("eta must be 0 (none) or a finite number >= 1");
  at_most("avq_iterations", p_.avq_iterations, limits::kMaxIterations);
  at_most("kmeans_iterations", p_.kmeans_iterations, limits::kMaxIterations);
  at_most("pq_kmeans_iterations", p_.pq_kmeans_iterations, limits::kMaxIterations);
  at_most("training_sample_size", p_.training_sample_size, limits::kMaxTrainingSampleSize);
  at_most("seed", p_.seed, limits::kMaxSeed);
  at_most("default_leaves_to_search", p_.default_leaves_to_search, limits::kMaxLeavesToSearch);
  at_most("default_reorder_k", p_.default_reorder_k, limits::kMaxReorderK);
  layout_ = BlockLayout(p_.d, p_.dims_per_block);
  init_spill();
}

Index::~Index() = default;

size_t Index::ntotal() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return ntotal_;
}

IndexParams Index::params() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return p_;
}

bool Index::is_trained() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return trained_;
}

size_t Index::num_leaves() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return nleaves_;
}

bool Index::is_mapped() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return mapping_ != nullptr;
}

std::vector<float> Index::codebooks() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return codebooks_;
}

std::vector<float> Index::centers() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return resid_centers_;
}

namespace {
std::string fmt_g(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return std::string(b);
}
}  // namespace

void check_vectors(const float* x, size_t n, size_t d, Metric metric, const char* what) {
  const bool scale_free = metric == Metric::kCosine;
  const float max_abs = static_cast<float>(limits::kMaxAbsValue);
  for (size_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    float mx = 0.f;
    bool finite = true;
    for (size_t j = 0; j < d; ++j) {
      finite &= std::isfinite(xi[j]);
      mx = std::max(mx, std::fabs(xi[j]));
    }
    if (!finite) throw InvalidArgument(std::string(what) + " " + std::to_string(i) + " contains NaN or infinity");
    if (scale_free) {
      if (mx == 0)
        throw InvalidArgument(std::string(what) + " " + std::to_string(i) +
                              " is a zero vector, which has no direction under cosine");
    } else if (mx > max_abs) {
      throw InvalidArgument(std::string(what) + " " + std::to_string(i) + " has a value of magnitude " + fmt_g(mx) +
                            ", outside the supported range of metric '" + metric_name(metric) +
                            "': |value| <= " + fmt_g(limits::kMaxAbsValue) +
                            " (scale the data, or use metric='cosine', which accepts any finite values)");
    }
  }
}

void check_data_scale(const float* x, size_t n, size_t d, Metric metric) {
  if (metric == Metric::kCosine) return;
  double best = 0;
  for (size_t i = 0; i < n; ++i) best = std::max(best, norm_of(x + i * d, d));
  if (best > 0 && best < limits::kMinDataNorm)
    throw InvalidArgument("X: the largest vector norm is " + fmt_g(best) + ", outside the supported range of metric '" +
                          metric_name(metric) +
                          "': training data needs vectors of norm >= " + fmt_g(limits::kMinDataNorm) +
                          " (its squared norms and inner products would be subnormal floats; scale the data, "
                          "or use metric='cosine', which accepts any finite values)");
}

std::vector<int64_t> new_ids_for_add(const int64_t* ids, size_t n, int64_t next_id,
                                     const std::function<bool(int64_t)>& present) {
  std::vector<int64_t> new_ids(n);
  if (ids) {
    std::memcpy(new_ids.data(), ids, n * sizeof(int64_t));
    for (int64_t id : new_ids)
      if (is_reserved_id(id))
        throw InvalidArgument("ids contains " + std::to_string(id) +
                              ", which is reserved (-1 pads search results; INT64_MIN is reserved with it)");
    std::vector<int64_t> sorted(new_ids);
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 1; i < n; ++i)
      if (sorted[i] == sorted[i - 1]) throw InvalidArgument("duplicate id " + std::to_string(sorted[i]) + " in ids");
    for (int64_t id : new_ids)
      if (present(id)) throw InvalidArgument("id " + std::to_string(id) + " is already in the index");
  } else {
    // Automatic ids next_id .. next_id + n - 1 stay below INT64_MAX (beyond, they would wrap;
    // INT64_MAX itself is the saturated next id, so it can only be given explicitly).
    if (n > uint64_t(std::numeric_limits<int64_t>::max()) || next_id > std::numeric_limits<int64_t>::max() - int64_t(n))
      throw InvalidArgument("automatic ids exhausted: the next id is " + std::to_string(next_id) + " and " +
                            std::to_string(n) + " are needed (pass ids explicitly)");
    for (size_t i = 0; i < n; ++i) new_ids[i] = next_id + int64_t(i);
  }
  return new_ids;
}

void check_stored_ids(const int64_t* ids, size_t n, int64_t next_id) {
  if (next_id < 0) throw InvalidArgument("corrupted index file: negative next id");
  for (size_t i = 0; i < n; ++i) {
    if (is_reserved_id(ids[i])) throw InvalidArgument("corrupted index file: reserved id " + std::to_string(ids[i]));
    if (ids[i] >= next_id && next_id != std::numeric_limits<int64_t>::max())
      throw InvalidArgument("corrupted index file: id beyond the recorded next id");
  }
  std::vector<int64_t> sorted(ids, ids + n);
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    throw InvalidArgument("corrupted index file: duplicate id");
}

TrainStats Index::train_stats() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return stats_;
}

std::vector<uint64_t> Index::leaf_sizes() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<uint64_t> out;
  for (const Leaf& l : leaves_) out.push_back(l.n);
  return out;
}

void Index::prepare_vector(const float* x, float* out) const {
  const size_t d = p_.d;
  if (p_.metric == Metric::kCosine) {
    double nrm = norm_of(x, d);
    if (!(nrm > 0)) throw InvalidArgument("zero vector under the cosine metric");
    // Divide in double: 1/||x|| overflows float for subnormal-norm vectors.
    for (size_t j = 0; j < d; ++j) out[j] = static_cast<float>(x[j] / nrm);
  } else {
    std::memcpy(out, x, d * sizeof(float));
  }
}

void Index::build_codebooks_t() {
  codebooks_t_.assign(codebooks_.size(), 0.f);
  transpose_codebook(layout_, codebooks_.data(), codebooks_t_.data());
}

void Index::sync_views(Leaf& l) {
  l.codes_p = l.codes.data();
  l.ids_p = l.ids.data();
  l.bias_p = l.bias.empty() ? nullptr : l.bias.data();
}

void Index::clear_arena() {
  std::vector<float>().swap(rvec_);
  std::vector<int8_t>().swap(rvec8_);
  arena_rows_ = hole_rows_ = 0;
  for (Leaf& l : leaves_) l.row_off = l.row_cap = 0;
  sync_store_views();
}

void Index::compact_arena() {
  // Rewrite the arena leaf by leaf without holes (room = size).
  if (p_.reorder == ReorderMode::kNone) return;
  const size_t d = p_.d;
  size_t rows = 0;
  for (const Leaf& l : leaves_) rows += l.n;
  std::vector<float> nv;
  std::vector<int8_t> n8;
  if (p_.reorder == ReorderMode::kFloat32) reserve_huge(nv, rows * d);
  if (p_.reorder == ReorderMode::kInt8) reserve_huge(n8, rows * d);
  size_t off = 0;
  for (Leaf& l : leaves_) {
    if (p_.reorder == ReorderMode::kFloat32)
      nv.insert(nv.end(), rvec_.begin() + l.row_off * d, rvec_.begin() + (l.row_off + l.n) * d);
    if (p_.reorder == ReorderMode::kInt8)
      n8.insert(n8.end(), rvec8_.begin() + l.row_off * d, rvec8_.begin() + (l.row_off + l.n) * d);
    l.row_off = off;
    l.row_cap = l.n;
    off += l.n;
  }
  rvec_.swap(nv);
  rvec8_.swap(n8);
  arena_rows_ = rows;
  hole_rows_ = 0;
  sync_store_views();
}

void Index::sync_store_views() {
  rvec_p_ = rvec_.empty() ? nullptr : rvec_.data();
  rvec8_p_ = rvec8_.empty() ? nullptr : rvec8_.data();
}

void Index::materialize() {
  if (!mapping_) return;
  const size_t d = p_.d, gb = group_bytes();
  for (Leaf& l : leaves_) {
    size_t ng = (l.n + 31) / 32;
    l.codes.assign(l.codes_p, l.codes_p + ng * gb);
    l.ids.assign(l.ids_p, l.ids_p + l.n);
    if (l.bias_p) l.bias.assign(l.bias_p, l.bias_p + l.n);
    sync_views(l);
  }
  if (rvec_p_ && rvec_.empty()) {
    reserve_huge(rvec_, arena_rows_ * d);
    rvec_.assign(rvec_p_, rvec_p_ + arena_rows_ * d);
  }
  if (rvec8_p_ && rvec8_.empty()) {
    reserve_huge(rvec8_, arena_rows_ * d);
    rvec8_.assign(rvec8_p_, rvec8_p_ + arena_rows_ * d);
  }
  sync_store_views();
  mapping_.reset();
}

void Index::ensure_id_map() const {
  std::lock_guard<std::mutex> lock(id_map_mu_);
  if (id_map_valid_) return;
  id_map_.clear();
  id_map_.reserve(ntotal_);
  for (size_t l = 0; l < leaves_.size(); ++l)
    for (uint32_t i = 0; i < leaves_[l].n; ++i) id_map_[leaves_[l].ids_p[i]] = (uint64_t(l) << 32) | i;
  id_map_valid_ = true;
}

void Index::train(const float* x, size_t n, int nthreads, Monitor* mon) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  const size_t d = p_.d;
  if (n == 0) throw InvalidArgument("cannot train on an empty array");
  check_vectors(x, n, d, p_.metric, "X row");
  check_data_scale(x, n, d, p_.metric);
  if (p_.num_leaves == 0) throw InvalidArgument("num_leaves must be set before training (avq_plugin._params)");
  const size_t L = p_.num_leaves;
  if (L > n)
    throw InvalidArgument("num_leaves (" + std::to_string(L) + ") exceeds the number of training vectors (" +
                          std::to_string(n) + ")");
  // Training sample (sorted random subset, deterministic for the seed).
  // Default sample (training_sample_rows): enough rows for the partitioner; the codebooks
  // (16 x d numbers) are then trained on at most 50k of them. An explicit size is used for both.
  const size_t S = training_sample_rows(n, L, p_.training_sample_size);
  std::vector<size_t> sample(n);
  std::iota(sample.begin(), sample.end(), 0);
  if (S < n) {
    std::mt19937_64 rng(p_.seed * 0x2545F4914F6CDD1DULL + 7);
    for (size_t i = 0; i < S; ++i)
      std::swap(sample[i], sample[i + std::uniform_int_distribution<size_t>(0, n - 1 - i)(rng)]);
    sample.resize(S);
    std::sort(sample.begin(), sample.end());
  }
  std::vector<float> xs(S * d);
  for (size_t i = 0; i < S; ++i) prepare_vector(x + sample[i] * d, xs.data() + i * d);

  // Partitioning.
  const bool spherical = p_.metric != Metric::kL2;
  KMeansOptions ko;
  ko.k = L;
  ko.iterations = static_cast<int>(p_.kmeans_iterations);
  ko.spherical = spherical;
  ko.seed = p_.seed;
  ko.nthreads = nthreads;
  ko.stage = "partition k-means";
  std::vector<uint32_t> assign;
  std::vector<float> probe = train_kmeans(xs.data(), S, d, ko, mon, &assign);
  std::vector<float> resid = probe;
  if (spherical) {
    // Residuals are taken to the cluster means (the L2-optimal centre); probing uses directions.
    std::vector<double> sums(L * d, 0.0);
    std::vector<size_t> cnt(L, 0);
    for (size_t i = 0; i < S; ++i) {
      cnt[assign[i]]++;
      for (size_t j = 0; j < d; ++j) sums[assign[i] * d + j] += xs[i * d + j];
    }
    for (size_t l = 0; l < L; ++l)
      if (cnt[l])
        for (size_t j = 0; j < d; ++j) resid[l * d + j] = static_cast<float>(sums[l * d + j] / double(cnt[l]));
  }
  check_stop(mon);

  // Codebooks on the residuals of the sample.
  auto eta_fn_ptr = std::make_shared<EtaFunction>(p_.threshold, p_.eta, p_.eta_scann, static_cast<int>(d));
  const EtaFunction& eta_fn = *eta_fn_ptr;
  const size_t Sq = p_.training_sample_size ? S : std::min<size_t>(S, 50000);
  std::vector<float> R(Sq * d), U(Sq * d, 0.f);
  std::vector<double> eta(Sq, 1.0);
  TrainStats st;
  st.threshold = p_.threshold;
  st.sample_size = Sq;
  st.eta_min = std::numeric_limits<double>::infinity();
  st.eta_max = -st.eta_min;
  double eta_sum = 0;
  size_t with_direction = 0;
  for (size_t i = 0; i < Sq; ++i) {
    const size_t src = i * S / Sq;  // evenly strided over the (random) sample
    const float* xi = xs.data() + src * d;
    const float* c = resid.data() + size_t(assign[src]) * d;
    for (size_t j = 0; j < d; ++j) R[i * d + j] = xi[j] - c[j];
    double nrm = norm_of(xi, d);
    if (nrm > 0) {
      // Zero vectors have no direction: they get plain PQ and stay out of the eta statistics.
      for (size_t j = 0; j < d; ++j) U[i * d + j] = static_cast<float>(xi[j] / nrm);
      eta[i] = eta_fn(p_.metric == Metric::kCosine ? 1.0 : nrm);  // cosine: unit by construction
      st.eta_min = std::min(st.eta_min, eta[i]);
      st.eta_max = std::max(st.eta_max, eta[i]);
      eta_sum += eta[i];
      ++with_direction;
    }
  }
  if (with_direction == 0) st.eta_min = st.eta_max = 1.0;
  st.eta_mean = with_direction ? eta_sum / double(with_direction) : 1.0;
  // eta < 1 (ScaNN formula with T < norm/sqrt(d)) would reward parallel error: clamp to plain
  // PQ for those points, as ScaNN effectively does; the Python layer warns.
  for (double& e : eta) e = std::max(e, 1.0);
  CodebookTrainOptions co;
  co.kmeans_iterations = static_cast<int>(p_.pq_kmeans_iterations);
  co.avq_iterations = static_cast<int>(p_.avq_iterations);
  co.seed = p_.seed;
  co.nthreads = nthreads;
  CodebookTrainStats cs;
  std::vector<float> cb = train_codebooks(R.data(), eta_fn.plain() ? nullptr : U.data(),
                                          eta_fn.plain() ? nullptr : eta.data(), Sq, layout_, co, mon, &cs);
  st.loss = cs.loss;

  std::vector<float> scale(d, 1.f);
  if (p_.reorder == ReorderMode::kInt8) {
    for (size_t j = 0; j < d; ++j) {
      float mx = 0;
      for (size_t i = 0; i < S; ++i) mx = std::max(mx, std::fabs(xs[i * d + j]));
      scale[j] = mx > 0 ? mx / 127.f : 1.f;
    }
  }

  // Commit.
  mapping_.reset();
  threshold_used_ = p_.threshold;
  eta_fn_ = eta_fn_ptr;
  nleaves_ = L;
  probe_centers_ = std::move(probe);
  probe_table_.build(probe_centers_.data(), L, d);
  resid_centers_ = std::move(resid);
  codebooks_ = std::move(cb);
  build_codebooks_t();
  int8_scale_ = std::move(scale);
  stats_ = st;
  leaves_.assign(L, Leaf());
  for (Leaf& l : leaves_) sync_views(l);
  clear_arena();
  spill_reset();
  ntotal_ = 0;
  next_id_ = 0;
  {
    std::lock_guard<std::mutex> g(id_map_mu_);
    id_map_.clear();
    id_map_valid_ = false;
  }
  trained_ = true;
}

void Index::encode_points(const float* x, size_t n, int nthreads, Monitor* mon, std::vector<uint32_t>& leaf_of,
                          std::vector<uint8_t>& codes) const {
  const size_t d = p_.d, M = layout_.num_blocks, L = nleaves_;
  const bool by_dot = p_.metric != Metric::kL2;
  const EtaFunction& eta_fn = *eta_fn_;
  leaf_of.resize(n);
  codes.resize(n * M);
  const size_t step = 8192;
  for (size_t b0 = 0; b0 < n; b0 += step) {
    check_stop(mon);
    size_t e0 = std::min(n, b0 + step);
    parallel_for(e0 - b0, nthreads, 256, [&](size_t b, size_t e) {
      // Leaves first, a block of vectors at a time (the centre table is read once per block).
      const size_t G = probe_table_.ngroups * 16, rows = score_rows(G);
      std::vector<float> vb(rows * d), scores(rows * G);
      for (size_t ib = b; ib < e; ib += rows) {
        const size_t nb = std::min(rows, e - ib);
        for (size_t t = 0; t < nb; ++t) prepare_vector(x + (b0 + ib + t) * d, vb.data() + t * d);
        probe_table_.score_multi(vb.data(), nb, by_dot, scores.data());
        for (size_t t = 0; t < nb; ++t) leaf_of[b0 + ib + t] = argmax_first(scores.data() + t * G, L);
      }
      std::vector<float> v(d), r(d), u(d);
      EncodeScratch sc;
      for (size_t ii = b; ii < e; ++ii) {
        size_t i = b0 + ii;
        prepare_vector(x + i * d, v.data());
        const uint32_t best = leaf_of[i];
        const float* c = resid_centers_.data() + size_t(best) * d;
        for (size_t j = 0; j < d; ++j) r[j] = v[j] - c[j];
        double nrm = norm_of(v.data(), d);
        double eta = 1.0;
        if (nrm > 0 && !eta_fn.plain()) {
          for (size_t j = 0; j < d; ++j) u[j] = static_cast<float>(v[j] / nrm);
          eta = std::max(1.0, eta_fn(p_.metric == Metric::kCosine ? 1.0 : nrm));
        }
        encode_anisotropic(r.data(), eta != 1.0 ? u.data() : nullptr, eta, layout_, codebooks_t_.data(),
                           codes.data() + i * M, sc);
      }
    });
    if (mon) mon->progress("encode", e0, n, "");
  }
}

// The ids of n vectors about to be added: the given ones (checked: no duplicates among them
// or with the index) or max existing id + 1 onwards. Caller holds the exclusive lock.
std::vector<int64_t> Index::checked_new_ids(const int64_t* ids, size_t n) {
  if (ids && ntotal_ > 0) ensure_id_map();
  return new_ids_for_add(ids, n, next_id_, [&](int64_t id) { return ntotal_ > 0 && id_map_.count(id) != 0; });
}

void Index::add(const float* x, size_t n, const int64_t* ids, int nthreads, Monitor* mon) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (!trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
  if (n == 0) return;
  const size_t d = p_.d, M = layout_.num_blocks, gb = group_bytes();
  check_vectors(x, n, d, p_.metric, "X row");
  const std::vector<int64_t> new_ids = checked_new_ids(ids, n);
  std::vector<uint32_t> leaf_of;
  std::vector<uint8_t> codes;
  encode_points(x, n, nthreads, mon, leaf_of, codes);
  std::vector<uint32_t> spill_leaf;
  std::vector<uint8_t> spill_codes;
  spill_encode(x, n, leaf_of, nthreads, mon, spill_leaf, spill_codes);
  materialize();
  std::vector<size_t> more(nleaves_, 0);
  for (size_t i = 0; i < n; ++i) more[leaf_of[i]]++;
  // Per-leaf arrays grow exactly when the leaf was empty (fit), else with 50% slack: vector
  // doubling would waste up to half of the codes and ids.
  for (size_t l = 0; l < nleaves_; ++l) {
    if (more[l] == 0) continue;
    Leaf& leaf = leaves_[l];
    const size_t need = leaf.n + more[l], room = leaf.n == 0 ? need : need + need / 2;
    if (leaf.ids.capacity() < need) leaf.ids.reserve(room);
    if (leaf.codes.capacity() < ((need + 31) / 32) * gb) leaf.codes.reserve(((room + 31) / 32) * gb);
    if (p_.metric == Metric::kL2 && leaf.bias.capacity() < need) leaf.bias.reserve(room);
  }
  if (p_.reorder != ReorderMode::kNone) {
    // Room in the arena: a leaf that needs more moves to the end (exactly sized when it was
    // empty, as in fit(); with 50% slack when it grows).
    std::vector<std::pair<size_t, size_t>> moves;  // (leaf, old offset)
    for (size_t l = 0; l < nleaves_; ++l) {
      Leaf& leaf = leaves_[l];
      const size_t need = leaf.n + more[l];
      if (need <= leaf.row_cap) continue;
      const size_t cap = leaf.n == 0 ? need : need + need / 2;
      if (cap > 0xFFFFFFFFull) throw InvalidArgument("too many vectors in one leaf");
      if (leaf.n) moves.push_back({l, leaf.row_off});
      hole_rows_ += leaf.row_cap;
      leaf.row_off = arena_rows_;
      leaf.row_cap = static_cast<uint32_t>(cap);
      arena_rows_ += cap;
    }
    if (p_.reorder == ReorderMode::kFloat32) grow_huge(rvec_, arena_rows_ * d);
    if (p_.reorder == ReorderMode::kInt8) grow_huge(rvec8_, arena_rows_ * d);
    for (const auto& mv : moves) {
      const Leaf& leaf = leaves_[mv.first];
      if (!rvec_.empty())
        std::memcpy(&rvec_[leaf.row_off * d], &rvec_[mv.second * d], size_t(leaf.n) * d * sizeof(float));
      if (!rvec8_.empty()) std::memcpy(&rvec8_[leaf.row_off * d], &rvec8_[mv.second * d], size_t(leaf.n) * d);
    }
    sync_store_views();
  }
  std::vector<float> v(d);
  for (size_t i = 0; i < n; ++i) {
    Leaf& l = leaves_[leaf_of[i]];
    size_t pos = l.n;
    if (pos % 32 == 0) l.codes.resize(l.codes.size() + gb, 0);
    uint8_t* group = l.codes.data() + (pos / 32) * gb;
    for (size_t m = 0; m < M; ++m) set_nibble(group, m, pos % 32, codes[i * M + m]);
    l.ids.push_back(new_ids[i]);
    const size_t row = l.row_off + pos;
    prepare_vector(x + i * d, v.data());
    if (p_.reorder == ReorderMode::kFloat32) std::memcpy(&rvec_[row * d], v.data(), d * sizeof(float));
    if (p_.reorder == ReorderMode::kInt8)
      for (size_t j = 0; j < d; ++j) {
        float t = std::nearbyint(v[j] / int8_scale_[j]);
        rvec8_[row * d + j] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, t)));
      }
    if (p_.metric == Metric::kL2) {
      double s = 0;
      if (p_.l2_decoded_norms) {
        const float* c = resid_centers_.data() + size_t(leaf_of[i]) * d;
        for (size_t m = 0; m < M; ++m) {
          const size_t off = layout_.offset[m], dm = layout_.dims[m];
          const float* word = codebooks_.data() + 16 * off + size_t(codes[i * M + m]) * dm;
          for (size_t j = 0; j < dm; ++j) {
            const double t = double(c[off + j]) + word[j];
            s += t * t;
          }
        }
      } else {
        for (size_t j = 0; j < d; ++j) s += double(v[j]) * v[j];
      }
      l.bias.push_back(static_cast<float>(-0.5 * s));
    }
    if (id_map_valid_) id_map_[new_ids[i]] = (uint64_t(leaf_of[i]) << 32) | pos;
    l.n++;
  }
  spill_commit(x, n, leaf_of, new_ids, spill_leaf, spill_codes);
  for (Leaf& l : leaves_) sync_views(l);
  for (int64_t id : new_ids) next_id_ = next_id_after(next_id_, id);
  ntotal_ += n;
  if (hole_rows_ > arena_rows_ / 2) compact_arena();
}

size_t Index::remove(const int64_t* ids, size_t n) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (n == 0 || ntotal_ == 0) return 0;
  materialize();
  ensure_id_map();
  const size_t d = p_.d, M = layout_.num_blocks, gb = group_bytes();
  size_t removed = 0;
  for (size_t t = 0; t < n; ++t) {
    auto it = id_map_.find(ids[t]);
    if (it == id_map_.end()) continue;
    if (spill_) spill_->remove(ids[t], gb, M);
    size_t li = it->second >> 32, pos = it->second & 0xFFFFFFFFu;
    Leaf& l = leaves_[li];
    size_t last = l.n - 1;
    uint8_t* gl = l.codes.data() + (last / 32) * gb;
    if (pos != last) {
      uint8_t* gp = l.codes.data() + (pos / 32) * gb;
      for (size_t m = 0; m < M; ++m) set_nibble(gp, m, pos % 32, get_nibble(gl, m, last % 32));
      l.ids[pos] = l.ids[last];
      if (!rvec_.empty()) std::memcpy(&rvec_[(l.row_off + pos) * d], &rvec_[(l.row_off + last) * d], d * sizeof(float));
      if (!rvec8_.empty()) std::memcpy(&rvec8_[(l.row_off + pos) * d], &rvec8_[(l.row_off + last) * d], d);
      if (!l.bias.empty()) l.bias[pos] = l.bias[last];
      id_map_[l.ids[pos]] = (uint64_t(li) << 32) | pos;
      if (spill_) spill_->repoint(l.ids[pos], static_cast<uint32_t>(li), static_cast<uint32_t>(pos));
    }
    for (size_t m = 0; m < M; ++m) set_nibble(gl, m, last % 32, 0);
    l.ids.pop_back();
    if (!l.bias.empty()) l.bias.pop_back();
    l.n--;
    if (l.n % 32 == 0) l.codes.resize((l.n / 32) * gb);
    id_map_.erase(it);
    sync_views(l);
    ++removed;
  }
  ntotal_ -= removed;
  return removed;
}

void Index::set_default_search_params(uint32_t leaves_to_search, uint32_t reorder_k) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  p_.default_leaves_to_search = leaves_to_search;
  p_.default_reorder_k = reorder_k;
}

void Index::reset() {
  std::unique_lock<std::shared_mutex> lock(mu_);
  mapping_.reset();
  std::vector<Leaf>(nleaves_).swap(leaves_);  // frees the storage (assign would keep capacity)
  clear_arena();
  spill_reset();
  for (Leaf& l : leaves_) sync_views(l);
  ntotal_ = 0;
  next_id_ = 0;
  std::lock_guard<std::mutex> g(id_map_mu_);
  std::unordered_map<int64_t, uint64_t>().swap(id_map_);
  id_map_valid_ = false;
}

std::vector<int64_t> Index::all_ids() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<int64_t> out;
  out.reserve(ntotal_);
  for (const Leaf& l : leaves_) out.insert(out.end(), l.ids_p, l.ids_p + l.n);
  return out;
}

void Index::get_codes(const int64_t* ids, size_t n, uint8_t* out) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  ensure_id_map();
  const size_t M = layout_.num_blocks, gb = group_bytes();
  for (size_t t = 0; t < n; ++t) {
    auto it = id_map_.find(ids[t]);
    if (it == id_map_.end()) throw InvalidArgument("unknown id " + std::to_string(ids[t]));
    const Leaf& l = leaves_[it->second >> 32];
    size_t pos = it->second & 0xFFFFFFFFu;
    const uint8_t* g = l.codes_p + (pos / 32) * gb;
    for (size_t m = 0; m < M; ++m) out[t * M + m] = get_nibble(g, m, pos % 32);
  }
}

void Index::contains(const int64_t* ids, size_t n, uint8_t* out) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  ensure_id_map();
  for (size_t t = 0; t < n; ++t) out[t] = id_map_.count(ids[t]) ? 1 : 0;
}

void Index::get_leaves(const int64_t* ids, size_t n, int64_t* out) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  ensure_id_map();
  for (size_t t = 0; t < n; ++t) {
    auto it = id_map_.find(ids[t]);
    if (it == id_map_.end()) throw InvalidArgument("unknown id " + std::to_string(ids[t]));
    out[t] = int64_t(it->second >> 32);
  }
}

size_t Index::memory_usage() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  size_t b = sizeof(Index);
  b += (probe_centers_.capacity() + resid_centers_.capacity() + codebooks_.capacity() + int8_scale_.capacity()) *
       sizeof(float);
  for (const Leaf& l : leaves_) {
    b += sizeof(Leaf);
    if (mapping_) {
      size_t ng = (l.n + 31) / 32;
      b += ng * group_bytes() + l.n * sizeof(int64_t);
      if (l.bias_p) b += l.n * sizeof(float);
    } else {
      b += l.codes.capacity() + l.ids.capacity() * sizeof(int64_t) + l.bias.capacity() * sizeof(float);
    }
  }
  if (mapping_) {
    if (rvec_p_) b += arena_rows_ * p_.d * sizeof(float);
    if (rvec8_p_) b += arena_rows_ * p_.d;
  } else {
    b += rvec_.capacity() * sizeof(float) + rvec8_.capacity();
  }
  if (spill_) b += spill_->memory_usage();
  std::lock_guard<std::mutex> g(id_map_mu_);
  if (id_map_valid_) b += id_map_.bucket_count() * sizeof(void*) + id_map_.size() * 32;
  return b;
}

void Index::search(const float* q, size_t nq, size_t k, size_t leaves_to_search, size_t reorder_k, int nthreads,
                   float* D, int64_t* I) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (!trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
  if (k == 0) throw InvalidArgument("k must be positive");
  size_t nprobe = std::max<size_t>(1, std::min(leaves_to_search, nleaves_));
  size_t chunk = std::max<size_t>(1, std::min<size_t>(64, nq / (size_t(std::max(1, nthreads)) * 8)));
  check_queries(q, nq);
  // Every candidate count is bounded by the index's size before any arithmetic on it (reorder_k
  // may be anything up to SIZE_MAX here); search_one bounds it further by the probed leaves.
  reorder_k = std::min(reorder_k, ntotal_);
  parallel_for(nq, nthreads, chunk, [&](size_t b, size_t e) {
    static thread_local Scratch s;
    for (size_t i = b; i < e; ++i) search_one(q + i * p_.d, k, nprobe, reorder_k, s, D + i * k, I + i * k);
    release_large_scratch(s);
  });
}

void Index::probe(const float* q, size_t nq, size_t leaves_to_search, int nthreads, int32_t* out) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (!trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
  const size_t w = std::max<size_t>(1, std::min(leaves_to_search, nleaves_));
  check_queries(q, nq);
  parallel_for(nq, nthreads, 256, [&](size_t b, size_t e) {
    static thread_local Scratch s;
    s.q.resize(p_.d);
    for (size_t i = b; i < e; ++i) {
      prepare_vector(q + i * p_.d, s.q.data());
      select_leaves(s.q.data(), w, s);
      int32_t* o = out + i * w;
      for (size_t j = 0; j < w; ++j) o[j] = j < s.leaf_sel.size() ? static_cast<int32_t>(s.leaf_sel[j].second) : -1;
    }
  });
}

void Index::search_leaves(const float* q, size_t nq, size_t k, const int32_t* leaves, size_t w,
                          const int64_t* reorder_k, int nthreads, float* D, int64_t* I) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (!trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
  if (k == 0) throw InvalidArgument("k must be positive");
  if (w == 0 || w > nleaves_) throw InvalidArgument("leaf lists must have 1 to num_leaves columns");
  {
    std::vector<int32_t> row(w);
    for (size_t i = 0; i < nq; ++i) {
      if (reorder_k[i] < 1) throw InvalidArgument("reorder_k must be positive (query " + std::to_string(i) + ")");
      const int32_t* li = leaves + i * w;
      for (size_t j = 0; j < w; ++j)
        if (li[j] < -1 || li[j] >= static_cast<int64_t>(nleaves_))
          throw InvalidArgument("leaf " + std::to_string(li[j]) + " is out of range (query " + std::to_string(i) + ")");
      row.assign(li, li + w);
      std::sort(row.begin(), row.end());
      for (size_t j = 1; j < w; ++j)
        if (row[j] >= 0 && row[j] == row[j - 1])
          throw InvalidArgument("leaf " + std::to_string(row[j]) + " is listed twice (query " + std::to_string(i) +
                                ")");
    }
  }
  check_queries(q, nq);
  size_t chunk = std::max<size_t>(1, std::min<size_t>(64, nq / (size_t(std::max(1, nthreads)) * 8)));
  parallel_for(nq, nthreads, chunk, [&](size_t b, size_t e) {
    static thread_local Scratch s;
    for (size_t i = b; i < e; ++i) {
      s.given_leaves = leaves + i * w;
      s.given_n = w;
      search_one(q + i * p_.d, k, w, static_cast<size_t>(reorder_k[i]), s, D + i * k, I + i * k);
    }
    s.given_leaves = nullptr;
  });
}

// Best nprobe leaves by <q, c> (dot, cosine) or -||q - c||^2 (l2); ties: lower id. Fills s.leaf_sel.
void Index::select_leaves(const float* q, size_t nprobe, Scratch& s) const {
  const size_t L = nleaves_;
  const bool l2 = p_.metric == Metric::kL2;
  s.leaf_scores.resize(probe_table_.ngroups * 16);
  probe_table_.score(q, !l2, s.leaf_scores.data());
  // Best nprobe leaves, branch-free: one 64-bit key per leaf (order-preserving bits of the score,
  // then the inverted leaf id so that ties go to the lower id), the nprobe-th largest key by
  // selection, the keys at or above it, sorted.
  {
    s.keys.resize(L);
    for (uint32_t l = 0; l < L; ++l) {
      uint32_t u;
      std::memcpy(&u, &s.leaf_scores[l], 4);
      u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
      s.keys[l] = (uint64_t(u) << 32) | uint32_t(~l);
    }
    s.keys_tmp.assign(s.keys.begin(), s.keys.end());  // the selection scrambles its input
    const uint64_t cut = nprobe < L ? kth_largest(s.keys_tmp, nprobe - 1, s.keys_aux) : 0;
    s.keys_aux.resize(L);
    size_t w = 0;
    for (uint32_t l = 0; l < L; ++l) {
      s.keys_aux[w] = s.keys[l];
      w += s.keys[l] >= cut;
    }
    std::sort(s.keys_aux.begin(), s.keys_aux.begin() + w, std::greater<uint64_t>());
    s.leaf_sel.resize(w);
    for (size_t i = 0; i < w; ++i) {
      const uint32_t l = ~uint32_t(s.keys_aux[i]);
      s.leaf_sel[i] = {s.leaf_scores[l], l};
    }
  }
}

// Common start of search_one and search_one_float: fills D, I with the padding (-1 ids, the
// worst score), prepares the query in s.q and selects the leaves in s.leaf_sel (nprobe is set
// to their number). When the selected leaves hold fewer than min(k, ntotal) vectors (empty or
// small leaves, e.g. from duplicated training data), the probe widens to the next best leaves
// until they do. probed: the number of vectors in the selected leaves. Returns the prepared
// query, or nullptr when the index is empty.
const float* Index::start_query(const float* q_in, size_t k, size_t& nprobe, size_t& probed, Scratch& s, float* D,
                                int64_t* I) const {
  const float pad = p_.metric == Metric::kL2 ? kPadBest : -kPadBest;
  for (size_t j = 0; j < k; ++j) {
    D[j] = pad;
    I[j] = -1;
  }
  if (ntotal_ == 0) return nullptr;
  s.q.resize(p_.d);
  prepare_vector(q_in, s.q.data());
  s.q_unscale = 1.f;
  if (p_.metric == Metric::kDot) {
    // Rankings under dot do not depend on the query's scale: bring its largest coordinate into
    // [1, 2) by a power of two (exact), so that small queries keep normal-float lookup tables
    // and scores; the scores are scaled back on output.
    float mx = 0.f;
    for (float v : s.q) mx = std::max(mx, std::fabs(v));
    if (mx > 0.f) {
      const int e = std::ilogb(mx);
      const double down = std::ldexp(1.0, -e);  // up to 2^149: not a float
      for (float& v : s.q) v = static_cast<float>(v * down);
      s.q_unscale = std::ldexp(1.f, e);
    }
  }
  if (s.given_leaves) {
    s.leaf_sel.clear();
    for (size_t j = 0; j < s.given_n; ++j)
      if (s.given_leaves[j] >= 0) s.leaf_sel.push_back({0.f, static_cast<uint32_t>(s.given_leaves[j])});
  } else {
    select_leaves(s.q.data(), nprobe, s);
  }
  nprobe = std::min(nprobe, s.leaf_sel.size());  // defensive: scores are finite by construction
  const size_t need = std::min(k, ntotal_);
  probed = 0;
  for (size_t t = 0; t < nprobe; ++t) probed += leaves_[s.leaf_sel[t].second].n;
  if (probed < need && !s.given_leaves) {    // given leaves (a routed shard): exactly those
    select_leaves(s.q.data(), nleaves_, s);  // every leaf, best first
    probed = 0;
    nprobe = 0;
    while (nprobe < s.leaf_sel.size() && probed < need) probed += leaves_[s.leaf_sel[nprobe++].second].n;
  }
  return s.q.data();
}

// SOAR: scans the spilled copies held by leaf li with the query's LUT (as search_one does the
// leaf's own vectors); their candidates carry kSpillLeafFlag in the leaf.
void Index::scan_spilled(uint32_t li, const kernels::KernelTable& kt, float inv_scale, float bias, Scratch& s) const {
  const SpillStore::List& sl = spill_->lists[li];
  const size_t ng = (sl.n + 31) / 32;
  if (s.acc.size() < ng * 32) {
    s.acc.resize(ng * 32);
    s.idx.resize(ng * 32);
    s.sc.resize(ng * 32);
  }
  kt.scan_lut16(sl.codes.data(), ng, layout_.num_blocks_pad, s.lut8.data(), s.acc.data());
  const float* pb = p_.metric == Metric::kL2 ? sl.bias.data() : nullptr;
  const size_t cnt =
      kt.filter_scores(s.acc.data(), pb, sl.n, inv_scale, bias, s.topn.threshold(), s.idx.data(), s.sc.data());
  s.topn.append(s.sc.data(), s.idx.data(), cnt, li | kSpillLeafFlag);
}

void Index::search_one(const float* q_in, size_t k, size_t nprobe, size_t reorder_k, Scratch& s, float* D,
                       int64_t* I) const {
  const kernels::KernelTable& kt = kernels::active();
  const size_t d = p_.d, M = layout_.num_blocks, Mp = layout_.num_blocks_pad;
  const bool l2 = p_.metric == Metric::kL2;
  // 1. Padding, the prepared query, the leaves to probe.
  size_t probed = 0;
  const float* q = start_query(q_in, k, nprobe, probed, s, D, I);
  if (!q) return;
  if (spill_)  // SOAR: the probed leaves' spilled copies are probed too
    for (size_t t = 0; t < nprobe; ++t) probed += spill_->lists[s.leaf_sel[t].second].n;

  // 2. Float LUT of <q_m, C_m[k]>, then 8-bit quantisation with a per-block offset and one
  //    global scale chosen so that the 16-bit accumulators cannot overflow.
  s.lut.assign(Mp * 16, 0.f);
  s.lut8.assign(Mp * 16, 0);
  double range_sum = 0, range_max = 0, offset = 0;
  for (size_t m = 0; m < M; ++m) {
    const size_t off = layout_.offset[m], dm = layout_.dims[m];
    float* lut = s.lut.data() + m * 16;
    kt.dot_t16(q + off, codebooks_t_.data() + 16 * off, 1, dm, lut);
    float mn = lut[0], mx = lut[0];
    for (size_t c = 1; c < 16; ++c) {
      mn = std::min(mn, lut[c]);
      mx = std::max(mx, lut[c]);
    }
    for (size_t c = 0; c < 16; ++c) lut[c] -= mn;
    offset += mn;
    range_sum += double(mx) - mn;
    range_max = std::max(range_max, double(mx) - mn);
  }
  double scale = 1.0;
  if (range_max > 0) scale = std::min(255.0 / range_max, (65535.0 - double(M)) / range_sum);
  scale = std::min(scale, 1e30);  // a negligible LUT (tiny l2 query) must not overflow the float scale
  {
    // Round half up (entries are >= 0); the float product is the same at every SIMD level.
    const float fs = static_cast<float>(scale);
    const float* lut = s.lut.data();
    uint8_t* lut8 = s.lut8.data();
    for (size_t i = 0; i < M * 16; ++i) {
      float v = lut[i] * fs + 0.5f;
      v = v < 255.f ? v : 255.f;
      lut8[i] = static_cast<uint8_t>(static_cast<int>(v));
    }
    scale = fs;
  }
  const float inv_scale = static_cast<float>(1.0 / scale);

  // 3. Scan the probed leaves; keep the best `cap` approximate scores.
  const bool reorder = p_.reorder != ReorderMode::kNone;
  // At most the number of vectors probed (and at least 1): bounded before the top-N sizing.
  // SOAR: a vector can come twice (both copies): keep twice as many, then `want` distinct ones.
  const size_t want = std::max<size_t>(1, std::min(reorder ? std::max(k, reorder_k) : k, probed));
  const size_t cap = spill_ ? 2 * want : want;
  s.topn.reset(cap);
  for (size_t t = 0; t < nprobe; ++t) {
    const uint32_t li = s.leaf_sel[t].second;
    const Leaf& leaf = leaves_[li];
    const bool spilled = spill_ && spill_->lists[li].n;
    if (leaf.n == 0 && !spilled) continue;
    const size_t ng = (leaf.n + 31) / 32;
    if (s.acc.size() < ng * 32) {
      s.acc.resize(ng * 32);
      s.idx.resize(ng * 32);
      s.sc.resize(ng * 32);
    }
    kt.scan_lut16(leaf.codes_p, ng, Mp, s.lut8.data(), s.acc.data());
    const float bias = kt.dot(q, resid_centers_.data() + size_t(li) * d, d) + static_cast<float>(offset);
    size_t cnt = kt.filter_scores(s.acc.data(), l2 ? leaf.bias_p : nullptr, leaf.n, inv_scale, bias, s.topn.threshold(),
                                  s.idx.data(), s.sc.data());
    s.topn.append(s.sc.data(), s.idx.data(), cnt, li);
    if (spilled) scan_spilled(li, kt, inv_scale, bias, s);  // after: it reuses s.acc
  }
  std::vector<Cand>& cands = s.topn.finish(!reorder);
  if (spill_) dedup_spilled(cands, *spill_, s.seen, want, !reorder);

  // 4. Exact re-scoring of the candidates.
  if (reorder && !cands.empty()) {
    const size_t nc = cands.size();
    s.exact.resize(nc);
    if (p_.reorder == ReorderMode::kFloat32) {
      s.rows.resize(nc);
      for (size_t c = 0; c < nc; ++c) {
        s.rows[c] = rvec_p_ + (leaves_[cands[c].leaf].row_off + cands[c].pos) * d;
        const char* row = reinterpret_cast<const char*>(s.rows[c]);
        for (size_t off = 0; off < d * sizeof(float); off += 64) __builtin_prefetch(row + off);
      }
      kt.dot_gather(q, s.rows.data(), nc, d, s.exact.data());
    } else {
      s.w.resize(d);
      for (size_t j = 0; j < d; ++j) s.w[j] = q[j] * int8_scale_[j];
      s.rows8.resize(nc);
      for (size_t c = 0; c < nc; ++c) {
        s.rows8[c] = rvec8_p_ + (leaves_[cands[c].leaf].row_off + cands[c].pos) * d;
        for (size_t off = 0; off < d; off += 64) __builtin_prefetch(reinterpret_cast<const char*>(s.rows8[c]) + off);
      }
      kt.dot_i8_gather(s.w.data(), s.rows8.data(), nc, d, s.exact.data());
    }
    for (size_t c = 0; c < nc; ++c) {
      float v = s.exact[c];
      if (l2) v += leaves_[cands[c].leaf].bias_p[cands[c].pos];
      cands[c].score = v;
    }
    size_t keep = std::min(k, nc);
    std::partial_sort(cands.begin(), cands.begin() + keep, cands.end(), better);
    cands.resize(keep);
  }

  // 5. Output in the metric's units.
  float qn2 = 0;
  if (l2) {
    double t = 0;
    for (size_t j = 0; j < d; ++j) t += double(q[j]) * q[j];
    qn2 = static_cast<float>(t);
  }
  const size_t nout = std::min(k, cands.size());
  for (size_t j = 0; j < nout; ++j) {
    const Cand& c = cands[j];
    I[j] = leaves_[c.leaf].ids_p[c.pos];
    D[j] = l2 ? std::max(0.f, qn2 - 2.f * c.score) : c.score * s.q_unscale;
  }
}

// ------------------------------------------------------------ quantizer import (Faiss adapter)

void Index::set_quantizer(const float* probe, const float* resid, size_t L, const float* codebooks) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  const size_t d = p_.d;
  if (ntotal_ != 0) throw InvalidArgument("set_quantizer needs an empty index (call reset() first)");
  if (L == 0 || L > limits::kMaxLeaves)
    throw InvalidArgument("the number of leaves must be in [1, " + std::to_string(limits::kMaxLeaves) + "]");
  for (size_t i = 0; i < L * d; ++i)
    if (!std::isfinite(probe[i]) || !std::isfinite(resid[i])) throw InvalidArgument("centres contain NaN or infinity");
  for (size_t i = 0; i < layout_.codebook_size(); ++i)
    if (!std::isfinite(codebooks[i])) throw InvalidArgument("codebooks contain NaN or infinity");
  mapping_.reset();
  if (!trained_) {
    threshold_used_ = p_.threshold;
    eta_fn_ = std::make_shared<EtaFunction>(p_.threshold, p_.eta, p_.eta_scann, static_cast<int>(d));
    stats_ = TrainStats();
    stats_.threshold = p_.threshold;
    stats_.eta_min = stats_.eta_max = stats_.eta_mean = 1.0;
    int8_scale_.assign(d, 1.f);
  }
  nleaves_ = L;
  p_.num_leaves = static_cast<uint32_t>(L);  // the file stores the concrete count
  probe_centers_.assign(probe, probe + L * d);
  probe_table_.build(probe_centers_.data(), L, d);
  resid_centers_.assign(resid, resid + L * d);
  codebooks_.assign(codebooks, codebooks + layout_.codebook_size());
  build_codebooks_t();
  leaves_.assign(L, Leaf());
  for (Leaf& l : leaves_) sync_views(l);
  clear_arena();
  spill_reset();
  ntotal_ = 0;
  next_id_ = 0;
  {
    std::lock_guard<std::mutex> g(id_map_mu_);
    id_map_.clear();
    id_map_valid_ = false;
  }
  trained_ = true;
}

void Index::add_codes(const uint8_t* codes, const int64_t* leaf, size_t n, const int64_t* ids, const float* norms2) {
  std::unique_lock<std::shared_mutex> lock(mu_);
  if (!trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
  if (p_.reorder != ReorderMode::kNone)
    throw InvalidArgument("add_codes needs reorder='none': there are no vectors to re-score");
  if (n == 0) return;
  const size_t M = layout_.num_blocks, gb = group_bytes();
  const bool l2 = p_.metric == Metric::kL2;
  if (l2 && norms2 == nullptr) throw InvalidArgument("add_codes under l2 needs the squared norms");
  for (size_t i = 0; i < n; ++i) {
    if (leaf[i] < 0 || size_t(leaf[i]) >= nleaves_)
      throw InvalidArgument("leaf " + std::to_string(leaf[i]) + " is out of range");
    for (size_t m = 0; m < M; ++m)
      if (codes[i * M + m] > 15) throw InvalidArgument("codes must be 4-bit values (0..15)");
    if (l2 && !std::isfinite(norms2[i])) throw InvalidArgument("norms2 contains NaN or infinity");
  }
  const std::vector<int64_t> new_ids = checked_new_ids(ids, n);
  std::vector<size_t> more(nleaves_, 0);
  for (size_t i = 0; i < n; ++i) more[size_t(leaf[i])]++;
  for (size_t l = 0; l < nleaves_; ++l)
    if (more[l] && leaves_[l].n + more[l] > 0xFFFFFFFFull) throw InvalidArgument("too many vectors in one leaf");
  materialize();
  for (size_t i = 0; i < n; ++i) {
    const size_t li = size_t(leaf[i]);
    Leaf& l = leaves_[li];
    const size_t pos = l.n;
    if (pos % 32 == 0) l.codes.resize(l.codes.size() + gb, 0);
    uint8_t* group = l.codes.data() + (pos / 32) * gb;
    for (size_t m = 0; m < M; ++m) set_nibble(group, m, pos % 32, codes[i * M + m]);
    l.ids.push_back(new_ids[i]);
    if (l2) l.bias.push_back(-0.5f * norms2[i]);
    if (id_map_valid_) id_map_[new_ids[i]] = (uint64_t(li) << 32) | pos;
    l.n++;
  }
  for (Leaf& l : leaves_) sync_views(l);
  for (int64_t id : new_ids) next_id_ = next_id_after(next_id_, id);
  ntotal_ += n;
}

std::vector<float> Index::probe_centers() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  return probe_centers_;
}

// Queries are checked here too (the Python layer already did): a bad one fails the call.
void Index::check_queries(const float* q, size_t nq) const {
  check_vectors(q, nq, p_.d, p_.metric, "query");
}

void Index::search_float_lut(const float* q, size_t nq, size_t k, size_t leaves_to_search, int nthreads, float* D,
                             int64_t* I) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (!trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
  if (k == 0) throw InvalidArgument("k must be positive");
  const size_t nprobe = std::max<size_t>(1, std::min(leaves_to_search, nleaves_));
  const size_t chunk = std::max<size_t>(1, std::min<size_t>(64, nq / (size_t(std::max(1, nthreads)) * 8)));
  check_queries(q, nq);
  parallel_for(nq, nthreads, chunk, [&](size_t b, size_t e) {
    static thread_local Scratch s;
    for (size_t i = b; i < e; ++i) search_one_float(q + i * p_.d, k, nprobe, s, D + i * k, I + i * k);
    release_large_scratch(s);
  });
}

void Index::search_one_float(const float* q_in, size_t k, size_t nprobe, Scratch& s, float* D, int64_t* I) const {
  const kernels::KernelTable& kt = kernels::active();
  const size_t d = p_.d, M = layout_.num_blocks, gb = group_bytes();
  const bool l2 = p_.metric == Metric::kL2;
  size_t probed = 0;
  const float* q = start_query(q_in, k, nprobe, probed, s, D, I);
  if (!q) return;
  s.lut.assign(M * 16, 0.f);
  for (size_t m = 0; m < M; ++m) {
    const size_t off = layout_.offset[m], dm = layout_.dims[m];
    kt.dot_t16(q + off, codebooks_t_.data() + 16 * off, 1, dm, s.lut.data() + m * 16);
  }
  // The k best so far in a heap whose top is the worst (ordered by `better`).
  std::vector<Cand> heap;
  heap.reserve(std::min(k, probed) + 1);
  for (size_t t = 0; t < nprobe; ++t) {
    const uint32_t li = s.leaf_sel[t].second;
    const Leaf& leaf = leaves_[li];
    const float base = kt.dot(q, resid_centers_.data() + size_t(li) * d, d);
    for (uint32_t pos = 0; pos < leaf.n; ++pos) {
      const uint8_t* group = leaf.codes_p + size_t(pos / 32) * gb;
      float acc = base;
      for (size_t m = 0; m < M; ++m) acc += s.lut[m * 16 + get_nibble(group, m, pos % 32)];
      if (l2) acc += leaf.bias_p[pos];
      const Cand c{acc, li, pos};
      if (heap.size() < k) {
        heap.push_back(c);
        std::push_heap(heap.begin(), heap.end(), better);
      } else if (better(c, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), better);
        heap.back() = c;
        std::push_heap(heap.begin(), heap.end(), better);
      }
    }
  }
  std::sort_heap(heap.begin(), heap.end(), better);
  float qn2 = 0;
  if (l2) {
    double t = 0;
    for (size_t j = 0; j < d; ++j) t += double(q[j]) * q[j];
    qn2 = static_cast<float>(t);
  }
  for (size_t j = 0; j < heap.size(); ++j) {
    I[j] = leaves_[heap[j].leaf].ids_p[heap[j].pos];
    D[j] = l2 ? std::max(0.f, qn2 - 2.f * heap[j].score) : heap[j].score * s.q_unscale;
  }
}

}  // namespace avq
