// Search: leaf selection, the LUT16 scan with top-N selection, SOAR de-duplication, exact
// re-scoring; probe() and search_leaves() for routed (sharded) search.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "checks.h"
#include "index.h"
#include "kernels/kernels.h"
#include "search_scratch.h"

namespace avq {

using topk::better;
using topk::Cand;

namespace {

constexpr float kPadBest = std::numeric_limits<float>::max();

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

}  // namespace

// Per-thread scratch lives as long as its (pool) thread: beyond a few MB it is released after
// each call, so that one large search does not pin its high-water mark forever.
void Index::release_large_scratch(Scratch& s) {
  if (s.footprint() > limits::kScratchKeepBytes) s = Scratch();
}

// Queries are checked here too (the Python layer already did): a bad one fails the call.
void Index::check_queries(const float* q, size_t nq) const {
  check_vectors(q, nq, p_.d, p_.metric, "query");
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
    const uint64_t cut = nprobe < L ? topk::kth_largest(s.keys_tmp, nprobe - 1, s.keys_aux) : 0;
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
    size_t cnt = kt.filter_scores(s.acc.data(), l2 ? leaf.scan_p : nullptr, leaf.n, inv_scale, bias, s.topn.threshold(),
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

}  // namespace avq
