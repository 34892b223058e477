// What the Faiss adapter needs of the index: a quantizer built elsewhere (set_quantizer), codes
// computed elsewhere (add_codes), the probe centres, and search with float lookup tables (the
// scores Faiss computes for the same codes).
#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>

#include "codes.h"
#include "ids.h"
#include "index.h"
#include "kernels/kernels.h"
#include "search_scratch.h"

namespace avq {

using topk::Better;
using topk::better;
using topk::Cand;

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
  build_probe_table();
  resid_centers_.assign(resid, resid + L * d);
  codebooks_.assign(codebooks, codebooks + layout_.codebook_size());
  build_codebooks_t();
  start_empty(L);
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
  for (size_t l = 0; l < nleaves_; ++l)
    if (more[l]) leaves_[l].codes.resize((leaves_[l].n + more[l] + 31) / 32, (spill_count(l) + 31) / 32, gb);
  for (size_t i = 0; i < n; ++i) {
    const size_t li = size_t(leaf[i]);
    Leaf& l = leaves_[li];
    const size_t pos = l.n;
    uint8_t* group = l.codes.primary() + (pos / 32) * gb;
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
      if (l2) acc += leaf.scan_p[pos];
      const Cand c{acc, li, pos};
      if (heap.size() < k) {
        heap.push_back(c);
        std::push_heap(heap.begin(), heap.end(), Better{});
      } else if (better(c, heap.front())) {
        std::pop_heap(heap.begin(), heap.end(), Better{});
        heap.back() = c;
        std::push_heap(heap.begin(), heap.end(), Better{});
      }
    }
  }
  std::sort_heap(heap.begin(), heap.end(), Better{});
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
