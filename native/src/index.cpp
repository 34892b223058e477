// The index itself: parameters, construction, accessors and the mutations (add, remove, reset).
// The other jobs of the class live in their own files: train.cpp (training), search.cpp
// (search), reorder_store.cpp (the re-ranking vectors), ids.cpp (the id map),
// faiss_import.cpp (quantizer and code import, float-LUT search), io.cpp (files), soar.cpp.
#include "index.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <string>

#include "checks.h"
#include "codes.h"
#include "huge_pages.h"
#include "ids.h"
#include "io.h"

namespace avq {

namespace {
// The one check of a stored default leaf_margin (IndexParams::default_leaf_margin): negative is
// none (kept as -1); otherwise a finite float32 >= 0, under dot or cosine only.
double checked_default_margin(double m, Metric metric) {
  if (std::isnan(m) || std::isinf(m) || m > double(std::numeric_limits<float>::max()))
    throw InvalidArgument("default_leaf_margin must be a finite float32 (negative: none)");
  if (m < 0) return -1;
  if (metric == Metric::kL2)
    throw InvalidArgument("default_leaf_margin needs metric 'cosine' or 'dot' (this index's metric is 'l2')");
  return m;
}
}  // namespace

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
    case ReorderMode::kFloat16:
      return "float16";
  }
  return "?";
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
  if (!valid_reorder(static_cast<uint32_t>(p_.reorder))) throw InvalidArgument("unknown reorder mode");
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
  p_.default_leaf_margin = checked_default_margin(p_.default_leaf_margin, p_.metric);
  layout_ = BlockLayout(p_.d, p_.dims_per_block);
  init_spill();
}

Index::~Index() = default;

// A trained index of L empty leaves (after training or a quantizer import). Caller holds the
// exclusive lock.
void Index::start_empty(size_t L) {
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

void Index::set_default_search_params(uint32_t leaves_to_search, uint32_t reorder_k, double leaf_margin) {
  leaf_margin = checked_default_margin(leaf_margin, p_.metric);  // metric: immutable
  std::unique_lock<std::shared_mutex> lock(mu_);
  p_.default_leaves_to_search = leaves_to_search;
  p_.default_reorder_k = reorder_k;
  p_.default_leaf_margin = leaf_margin;
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

void Index::sync_views(Leaf& l) {
  l.codes_p = l.codes.primary();
  l.spill_p = l.codes.spill();
  l.ids_p = l.ids.data();
  l.bias_p = l.bias.empty() ? nullptr : l.bias.data();
  l.scan_p = l.scan_bias.empty() ? l.bias_p : l.scan_bias.data();
}

void Index::fit_code_groups(size_t li) {
  Leaf& l = leaves_[li];
  l.codes.resize((l.n + 31) / 32, (spill_count(li) + 31) / 32, group_bytes());
  sync_views(l);
}

double Index::decoded_norm2(size_t li, const uint8_t* codes) const {
  const float* c = resid_centers_.data() + li * p_.d;
  double s = 0;
  for (size_t m = 0; m < layout_.num_blocks; ++m) {
    const size_t off = layout_.offset[m], dm = layout_.dims[m];
    const float* word = codebooks_.data() + 16 * off + size_t(codes[m]) * dm;
    for (size_t j = 0; j < dm; ++j) {
      const double t = double(c[off + j]) + word[j];
      s += t * t;
    }
  }
  return s;
}

bool Index::scan_decoded_separately() const {
  return p_.metric == Metric::kL2 && p_.l2_decoded_norms && p_.reorder != ReorderMode::kNone;
}

void Index::fill_scan_bias(size_t li) {
  Leaf& l = leaves_[li];
  const size_t M = layout_.num_blocks, gb = group_bytes();
  std::vector<uint8_t> code(M);
  l.scan_bias.resize(l.n);
  for (uint32_t pos = 0; pos < l.n; ++pos) {
    const uint8_t* group = l.codes_p + size_t(pos / 32) * gb;
    for (size_t m = 0; m < M; ++m) code[m] = get_nibble(group, m, pos % 32);
    l.scan_bias[pos] = static_cast<float>(-0.5 * decoded_norm2(li, code.data()));
  }
  l.scan_p = l.n ? l.scan_bias.data() : l.bias_p;
}

void Index::materialize() {
  if (!mapping_) return;
  const size_t d = p_.d, gb = group_bytes();
  for (size_t li = 0; li < leaves_.size(); ++li) {
    Leaf& l = leaves_[li];
    l.codes.assign(l.codes_p, (l.n + 31) / 32, l.spill_p, (spill_count(li) + 31) / 32, gb);
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
  if (rvec16_p_ && rvec16_.empty()) {
    reserve_huge(rvec16_, arena_rows_ * f16_row_width());
    rvec16_.assign(rvec16_p_, rvec16_p_ + arena_rows_ * f16_row_width());
  }
  sync_store_views();
  mapping_.reset();
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
  std::vector<size_t> more(nleaves_, 0), spill_more(nleaves_, 0);
  for (size_t i = 0; i < n; ++i) more[leaf_of[i]]++;
  for (uint32_t c : spill_leaf) spill_more[c]++;
  // Per-leaf arrays grow exactly when the leaf was empty (fit), else with 50% slack: vector
  // doubling would waste up to half of the codes and ids. The code sections take their new
  // sizes once (the spilled section moves at most once per leaf and call).
  for (size_t l = 0; l < nleaves_; ++l) {
    if (more[l] == 0 && spill_more[l] == 0) continue;
    Leaf& leaf = leaves_[l];
    const size_t need = leaf.n + more[l], room = leaf.n == 0 ? need : need + need / 2;
    const size_t sneed = spill_count(l) + spill_more[l];
    const size_t groups = (need + 31) / 32 + (sneed + 31) / 32;
    if (leaf.ids.capacity() < need) leaf.ids.reserve(room);
    if (leaf.codes.capacity_bytes() < groups * gb) leaf.codes.reserve(leaf.n == 0 ? groups : groups + groups / 2, gb);
    leaf.codes.resize((need + 31) / 32, (sneed + 31) / 32, gb);
    if (p_.metric == Metric::kL2 && leaf.bias.capacity() < need) leaf.bias.reserve(room);
    if (scan_decoded_separately() && leaf.scan_bias.capacity() < need) leaf.scan_bias.reserve(room);
  }
  reserve_rows(more);
  std::vector<float> v(d);
  for (size_t i = 0; i < n; ++i) {
    Leaf& l = leaves_[leaf_of[i]];
    size_t pos = l.n;
    uint8_t* group = l.codes.primary() + (pos / 32) * gb;
    for (size_t m = 0; m < M; ++m) set_nibble(group, m, pos % 32, codes[i * M + m]);
    l.ids.push_back(new_ids[i]);
    prepare_vector(x + i * d, v.data());
    store_row(l.row_off + pos, v.data());
    if (p_.metric == Metric::kL2) {
      // The exact norm for re-scoring; the scan's term is the decoded one when l2_decoded_norms.
      const double dec = p_.l2_decoded_norms ? decoded_norm2(leaf_of[i], codes.data() + i * M) : 0.0;
      double s = dec;
      if (!p_.l2_decoded_norms || p_.reorder != ReorderMode::kNone) {
        s = 0;
        for (size_t j = 0; j < d; ++j) s += double(v[j]) * v[j];
      }
      l.bias.push_back(static_cast<float>(-0.5 * s));
      if (scan_decoded_separately()) l.scan_bias.push_back(static_cast<float>(-0.5 * dec));
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
  const size_t M = layout_.num_blocks, gb = group_bytes();
  size_t removed = 0;
  // Codes are removed in place (the last copy of a leaf fills the gap); the sections shrink once
  // at the end, so that the spilled section moves at most once per leaf.
  for (size_t t = 0; t < n; ++t) {
    auto it = id_map_.find(ids[t]);
    if (it == id_map_.end()) continue;
    if (spill_) spill_remove(ids[t]);
    size_t li = it->second >> 32, pos = it->second & 0xFFFFFFFFu;
    Leaf& l = leaves_[li];
    size_t last = l.n - 1;
    move_last_code(l.codes.primary(), pos, last, M, gb);
    if (pos != last) {
      l.ids[pos] = l.ids[last];
      copy_row(l.row_off + last, l.row_off + pos);
      if (!l.bias.empty()) l.bias[pos] = l.bias[last];
      if (!l.scan_bias.empty()) l.scan_bias[pos] = l.scan_bias[last];
      id_map_[l.ids[pos]] = (uint64_t(li) << 32) | pos;
      if (spill_) spill_->repoint(l.ids[pos], static_cast<uint32_t>(li), static_cast<uint32_t>(pos));
    }
    l.ids.pop_back();
    if (!l.bias.empty()) l.bias.pop_back();
    if (!l.scan_bias.empty()) l.scan_bias.pop_back();
    l.n--;
    id_map_.erase(it);
    ++removed;
  }
  for (size_t li = 0; li < nleaves_; ++li) fit_code_groups(li);  // O(L): no-op where nothing changed
  ntotal_ -= removed;
  return removed;
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

size_t Index::memory_usage() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  size_t b = sizeof(Index);
  b += (probe_centers_.capacity() + resid_centers_.capacity() + codebooks_.capacity() + int8_scale_.capacity()) *
       sizeof(float);
  b += probe_table_.bytes();
  for (size_t li = 0; li < leaves_.size(); ++li) {
    const Leaf& l = leaves_[li];
    b += sizeof(Leaf);
    if (mapping_) {
      size_t ng = (l.n + 31) / 32 + (spill_count(li) + 31) / 32;
      b += ng * group_bytes() + l.n * sizeof(int64_t);
      if (l.bias_p) b += l.n * sizeof(float);
      b += l.scan_bias.capacity() * sizeof(float);
    } else {
      b += l.codes.capacity_bytes() + l.ids.capacity() * sizeof(int64_t) +
           (l.bias.capacity() + l.scan_bias.capacity()) * sizeof(float);
    }
  }
  if (mapping_) {
    if (rvec_p_) b += arena_rows_ * p_.d * sizeof(float);
    if (rvec8_p_) b += arena_rows_ * p_.d;
    if (rvec16_p_) b += arena_rows_ * f16_row_width() * sizeof(uint16_t);
  } else {
    b += rvec_.capacity() * sizeof(float) + rvec8_.capacity() + rvec16_.capacity() * sizeof(uint16_t);
  }
  if (spill_) b += spill_->memory_usage();
  std::lock_guard<std::mutex> g(id_map_mu_);
  if (id_map_valid_) b += id_map_.bucket_count() * sizeof(void*) + id_map_.size() * 32;
  return b;
}

}  // namespace avq
