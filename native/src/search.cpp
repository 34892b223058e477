// Search: leaf selection, the LUT16 scan with top-N selection, SOAR de-duplication, exact
// re-scoring; probe() and search_leaves() for routed (sharded) search.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <string>

#include "checks.h"
#include "index.h"
#include "kernels/kernels.h"
#include "merge.h"
#include "search_scratch.h"

namespace avq {

using topk::Better;
using topk::Cand;

namespace {

constexpr float kPadBest = std::numeric_limits<float>::max();

// Re-ranking prefetches the first bytes of every candidate's row before the exact scores; the
// hardware prefetcher streams the rest of a long row once its first lines are read. Prefetching
// whole 1.5 KB rows (384-d float32) issued ~1,400 prefetches per query that stalled on the
// full miss buffers: capping at 4 lines was 5-6 % faster per query at 384-d (in-process A/B,
// [13, 65] and [24, 240]) and the same on GloVe (rows of 4 lines).
constexpr size_t kReorderPrefetchBytes = 256;

// A float's bits as an unsigned integer in the float's order (-0 below +0; NaN never occurs), and
// back: keys that sort scores with their leaf id in one 64-bit compare.
uint32_t order_bits(float v) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
float from_order_bits(uint32_t u) {
  u = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

// SOAR: replaces the references of spilled copies by their primary copy's, drops repeated
// vectors (keeping the first occurrence, order kept), then keeps the `want` best (by `better`;
// `sorted`: cands are sorted best first). set: scratch for an open-addressing set; scores, sel,
// ties: scratch for the cut.
void dedup_spilled(std::vector<Cand>& cands, const SpillStore& sp, std::vector<uint64_t>& set, size_t want, bool sorted,
                   std::vector<float>& scores, std::vector<float>& sel, std::vector<Cand>& ties) {
  size_t cap = 64;
  int shift = 58;
  while (cap < 2 * cands.size()) {
    cap <<= 1;
    --shift;
  }
  set.assign(cap, 0);
  // First every reference (independent loads, mostly cache misses, that overlap), then the set.
  for (Cand& c : cands) {
    if (c.leaf & kSpillLeafFlag) {
      const uint64_t r = sp.lists[c.leaf & ~kSpillLeafFlag].ref[c.pos];
      c.leaf = static_cast<uint32_t>(r >> 32);
      c.pos = static_cast<uint32_t>(r);
    }
  }
  size_t w = 0;
  for (size_t i = 0; i < cands.size(); ++i) {
    const Cand c = cands[i];
    const uint64_t key = ((uint64_t(c.leaf) << 32) | c.pos) + 1;  // 0 marks an empty slot
    size_t h = static_cast<size_t>((key * 0x9E3779B97F4A7C15ull) >> shift);
    while (set[h] != 0 && set[h] != key) h = (h + 1) & (cap - 1);
    if (set[h] == key) continue;
    set[h] = key;
    cands[w++] = c;
  }
  cands.resize(w);
  if (w <= want) return;
  if (!sorted) {
    scores.resize(w);
    for (size_t i = 0; i < w; ++i) scores[i] = cands[i].score;
    topk::keep_best(cands.data(), w, scores.data(), want, sel, ties);
  }
  cands.resize(want);
}

// Finds a leaf listed twice in a set of leaf lists, in time linear in their size: one stamp per
// leaf, a new stamp per set (next), a leaf marked twice with the same stamp is a repeat. The
// stamps are per thread and kept between calls (4 bytes per leaf of the largest index checked
// on the thread), so a check allocates nothing once they are; cleared only when the counter wraps.
class LeafStamps {
 public:
  static LeafStamps& local(size_t nleaves) {
    static thread_local LeafStamps s;
    if (s.v_.size() < nleaves) s.v_.resize(nleaves, 0);
    return s;
  }
  void next() {
    if (++stamp_ == 0) {
      std::fill(v_.begin(), v_.end(), 0u);
      stamp_ = 1;
    }
  }
  // False when the leaf was already marked since next().
  bool mark(size_t leaf) {
    if (v_[leaf] == stamp_) return false;
    v_[leaf] = stamp_;
    return true;
  }

 private:
  std::vector<uint32_t> v_;
  uint32_t stamp_ = 0;
};

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
                   float* D, int64_t* I, float leaf_margin) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (!trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
  if (k == 0) throw InvalidArgument("k must be positive");
  if (std::isnan(leaf_margin)) leaf_margin = static_cast<float>(p_.default_leaf_margin);  // none: -1
  if (!std::isfinite(leaf_margin)) throw InvalidArgument("leaf_margin must be a finite number");
  // Margin 0 probes exactly the fixed count's leaves, with the same budget: the normal path.
  if (leaf_margin == 0.f) leaf_margin = -1.f;
  if (leaf_margin >= 0.f && p_.metric == Metric::kL2)
    throw InvalidArgument("leaf_margin needs metric 'cosine' or 'dot' (this index's metric is 'l2')");
  size_t nprobe = std::max<size_t>(1, std::min(leaves_to_search, nleaves_));
  size_t chunk = std::max<size_t>(1, std::min<size_t>(64, nq / (size_t(std::max(1, nthreads)) * 8)));
  check_queries(q, nq);
  // Every candidate count is bounded by the index's size before any arithmetic on it (reorder_k
  // may be anything up to SIZE_MAX here); search_one bounds it further by the probed leaves.
  reorder_k = std::min(reorder_k, ntotal_);
  parallel_for(nq, nthreads, chunk, [&](size_t b, size_t e) {
    static thread_local Scratch s;
    s.leaf_margin = leaf_margin;
    for (size_t i = b; i < e; ++i) search_one(q + i * p_.d, k, nprobe, reorder_k, s, D + i * k, I + i * k);
    s.leaf_margin = -1.f;
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

std::vector<int32_t> Index::probe_margin(const float* q, size_t nq, size_t leaves_to_search, float leaf_margin,
                                         int nthreads, size_t& width) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (!trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
  if (!(std::isfinite(leaf_margin) && leaf_margin >= 0.f))
    throw InvalidArgument("leaf_margin must be a finite number >= 0");
  if (p_.metric == Metric::kL2)
    throw InvalidArgument("leaf_margin needs metric 'cosine' or 'dot' (this index's metric is 'l2')");
  const size_t w = std::max<size_t>(1, std::min(leaves_to_search, nleaves_));
  check_queries(q, nq);
  std::vector<std::vector<int32_t>> lists(nq);  // at most nq x num_leaves entries in all
  parallel_for(nq, nthreads, 64, [&](size_t b, size_t e) {
    static thread_local Scratch s;
    s.q.resize(p_.d);
    s.leaf_margin = leaf_margin;
    for (size_t i = b; i < e; ++i) {
      prepare_vector(q + i * p_.d, s.q.data());
      const size_t chosen = select_leaves_by_margin(s.q.data(), w, s);  // (sequenced before the size)
      const size_t n = std::min(chosen, s.leaf_sel.size());
      lists[i].resize(n);
      for (size_t j = 0; j < n; ++j) lists[i][j] = static_cast<int32_t>(s.leaf_sel[j].second);
    }
    s.leaf_margin = -1.f;
  });
  width = w;
  for (const auto& l : lists) width = std::max(width, l.size());
  std::vector<int32_t> out(nq * width, -1);
  for (size_t i = 0; i < nq; ++i) std::copy(lists[i].begin(), lists[i].end(), out.begin() + i * width);
  return out;
}

void Index::check_leaf_lists(const int32_t* leaves, size_t n, size_t w, const int64_t* reorder_k) const {
  if (w == 0 || w > nleaves_) throw InvalidArgument("leaf lists must have 1 to num_leaves columns");
  LeafStamps& seen = LeafStamps::local(nleaves_);
  for (size_t i = 0; i < n; ++i) {
    if (reorder_k[i] < 1) throw InvalidArgument("reorder_k must be positive (query " + std::to_string(i) + ")");
    seen.next();
    const int32_t* li = leaves + i * w;
    for (size_t j = 0; j < w; ++j) {
      if (li[j] < -1 || li[j] >= static_cast<int64_t>(nleaves_))
        throw InvalidArgument("leaf " + std::to_string(li[j]) + " is out of range (query " + std::to_string(i) + ")");
      if (li[j] >= 0 && !seen.mark(size_t(li[j])))
        throw InvalidArgument("leaf " + std::to_string(li[j]) + " is listed twice (query " + std::to_string(i) + ")");
    }
  }
}

void Index::check_leaf_job(const LeafJob& job) const {
  if (job.offsets == nullptr) return check_leaf_lists(job.leaves, job.n, job.w, job.reorder_k);
  if (job.offsets[0] != 0 || static_cast<uint64_t>(job.offsets[job.n]) != job.w)
    throw InvalidArgument("leaf offsets must run from 0 to the number of leaves given");
  LeafStamps& seen = LeafStamps::local(nleaves_);
  for (size_t i = 0; i < job.n; ++i) {
    if (job.reorder_k[i] < 1) throw InvalidArgument("reorder_k must be positive (query " + std::to_string(i) + ")");
    // (offsets[i] is in [0, w]: checked as the previous row's end, or the first value)
    if (job.offsets[i + 1] <= job.offsets[i] || static_cast<uint64_t>(job.offsets[i + 1]) > job.w ||
        static_cast<uint64_t>(job.offsets[i + 1] - job.offsets[i]) > nleaves_)
      throw InvalidArgument("leaf offsets must give each query 1 to num_leaves leaves (query " + std::to_string(i) +
                            ")");
    seen.next();
    size_t m = 0;
    const int32_t* li = job.row(i, m);
    for (size_t j = 0; j < m; ++j) {
      if (li[j] < 0 || li[j] >= static_cast<int64_t>(nleaves_))
        throw InvalidArgument("leaf " + std::to_string(li[j]) + " is out of range (query " + std::to_string(i) + ")");
      if (!seen.mark(size_t(li[j])))
        throw InvalidArgument("leaf " + std::to_string(li[j]) + " is listed twice (query " + std::to_string(i) + ")");
    }
  }
}

void Index::search_leaves(const float* q, size_t nq, size_t k, const int32_t* leaves, size_t w,
                          const int64_t* reorder_k, int nthreads, float* D, int64_t* I) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (!trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
  if (k == 0) throw InvalidArgument("k must be positive");
  check_leaf_lists(leaves, nq, w, reorder_k);
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

// One query in the n jobs refs[0..n) of one group, searched as one index holding all their shards
// (disjoint leaves, no spilled copies: checked by the caller): the query prepared and its lookup
// table built once, one top-N over every job's leaves (the jobs by their best leaf, see below), one
// re-ranking budget (the sum of the jobs' budgets); owner: per-leaf scratch.
void Index::search_group(const std::vector<const Index*>& shards, const std::vector<LeafJob>& jobs,
                         const std::pair<uint32_t, size_t>* refs, size_t n, const float* q, size_t k,
                         const Index** owner, Scratch& s, float* D, int64_t* I) {
  const Index& first = *shards[jobs[refs[0].first].shard];
  const bool l2 = first.p_.metric == Metric::kL2;
  std::fill(D, D + k, l2 ? kPadBest : -kPadBest);
  std::fill(I, I + k, int64_t(-1));
  // Per job: its budget, its candidates, the owner of its leaves, and its best (first) leaf's
  // centre in s.cand_rows (for the scan order below).
  size_t probed = 0, budget = 0;
  s.keys.clear();
  s.cand_rows.clear();
  for (size_t t = 0; t < n; ++t) {
    const LeafJob& job = jobs[refs[t].first];
    const Index& x = *shards[job.shard];
    const size_t r = refs[t].second;
    const uint64_t b = static_cast<uint64_t>(job.reorder_k[r]);                   // (positive: checked)
    budget = budget > SIZE_MAX - b ? SIZE_MAX : budget + static_cast<size_t>(b);  // saturating
    size_t m = 0;
    const int32_t* li = job.row(r, m);
    int32_t best = -1;
    for (size_t j = 0; j < m; ++j)
      if (li[j] >= 0) {
        probed += x.leaves_[size_t(li[j])].n;
        owner[size_t(li[j])] = &x;
        if (best < 0) best = li[j];
      }
    s.cand_rows.push_back(first.probe_centers_.data() + size_t(best < 0 ? 0 : best) * first.p_.d);
    s.keys.push_back(t);
  }
  if (probed == 0) return;
  first.prepare_query(q, s);
  if (!s.lut_ready) {
    first.build_lut(s.q.data(), s);
    s.lut_ready = s.share_query;
  }
  const bool reorder = first.p_.reorder != ReorderMode::kNone;
  s.topn.reset(std::max<size_t>(1, std::min(reorder ? std::max(k, budget) : k, probed)));
  // The group's jobs in the order of their best (first) leaf's centre score, each job's leaves in
  // one call in probe order: the query's best leaves come first, as in one index holding the
  // group's shards, and the top-N's cut rises early. (In job order the best leaves of later
  // shards came late. In-process on GloVe-190k at 16 shards, the routed jobs of 10,000 queries
  // against one index's search of the same leaves: 1.17-1.18x before, 1.11-1.14x after; every
  // leaf in probe order, shards alternating call by call, 1.15-1.20x.) The order changes no
  // answer: the kept candidates are the best `cap` whatever the order, up to exact ties at the cut.
  s.cand_score.resize(n);
  kernels::active().dot_gather(s.q.data(), s.cand_rows.data(), n, first.p_.d, s.cand_score.data());
  for (size_t t = 0; t < n; ++t) {
    float score = s.cand_score[t];
    if (l2) {  // the probe's -||q - c||^2, up to ||q||^2: 2 <q, c> - ||c||^2
      double cc = 0;
      for (size_t j = 0; j < first.p_.d; ++j) cc += double(s.cand_rows[t][j]) * s.cand_rows[t][j];
      score = static_cast<float>(2.0 * double(score) - cc);
    }
    s.keys[t] = (uint64_t(order_bits(score)) << 32) | uint32_t(~uint32_t(t));
  }
  std::sort(s.keys.begin(), s.keys.end(), std::greater<uint64_t>());
  for (size_t u = 0; u < n; ++u) {
    const size_t t = ~uint32_t(s.keys[u]);
    const LeafJob& job = jobs[refs[t].first];
    const Index* x = shards[job.shard];
    size_t m = 0;
    const int32_t* li = job.row(refs[t].second, m);
    s.leaf_sel.clear();
    for (size_t j = 0; j < m; ++j)
      if (li[j] >= 0) s.leaf_sel.push_back({0.f, static_cast<uint32_t>(li[j])});
    x->scan_probed(s.q.data(), s.leaf_sel.size(), s);
  }
  std::vector<Cand>& cands = s.topn.finish(!reorder);
  first.finish_query(cands, s.q.data(), k, owner, s, D, I);
}

void Index::search_leaves_multi(const std::vector<const Index*>& shards, const std::vector<LeafJob>& jobs,
                                const float* q, size_t nq, size_t k, int nthreads, float* D, int64_t* I) {
  if (shards.empty()) throw InvalidArgument("no shards to search");
  if (k == 0) throw InvalidArgument("k must be positive");
  // Shared locks on every shard, taken in address order (a writer locks one index at a time).
  std::vector<const Index*> order(shards);
  std::sort(order.begin(), order.end());
  order.erase(std::unique(order.begin(), order.end()), order.end());
  std::vector<std::shared_lock<std::shared_mutex>> locks;
  for (const Index* x : order) locks.emplace_back(x->mu_);
  const Index& first = *shards[0];
  for (const Index* x : order) {
    if (!x->trained_) throw InvalidArgument("the index is not trained: call train() or fit() first");
    // The prepared query and the lookup table are shared: the same metric, layout and codebooks.
    if (x->p_.d != first.p_.d || x->p_.metric != first.p_.metric || x->p_.reorder != first.p_.reorder ||
        x->layout_.num_blocks != first.layout_.num_blocks || x->layout_.offset != first.layout_.offset ||
        x->layout_.dims != first.layout_.dims || x->codebooks_t_ != first.codebooks_t_ ||
        x->nleaves_ != first.nleaves_ || x->int8_scale_ != first.int8_scale_)
      throw InvalidArgument("the shards do not share one quantizer");
  }
  // The queries of every job, grouped by query (counting sort): (job, row) pairs.
  std::vector<size_t> start(nq + 1, 0);
  size_t total = 0;
  for (size_t j = 0; j < jobs.size(); ++j) {
    const LeafJob& job = jobs[j];
    if (job.shard >= shards.size()) throw InvalidArgument("job " + std::to_string(j) + ": no such shard");
    shards[job.shard]->check_leaf_job(job);
    for (size_t r = 0; r < job.n; ++r) {
      if (job.rows[r] < 0 || static_cast<uint64_t>(job.rows[r]) >= nq)
        throw InvalidArgument("job " + std::to_string(j) + ": row " + std::to_string(job.rows[r]) + " is outside [0, " +
                              std::to_string(nq) + ")");
      ++start[size_t(job.rows[r]) + 1];
    }
    total += job.n;
  }
  first.check_queries(q, nq);
  for (size_t i = 0; i < nq; ++i) start[i + 1] += start[i];
  std::vector<std::pair<uint32_t, size_t>> refs(total);
  {
    std::vector<size_t> next(start.begin(), start.end() - 1);
    for (size_t j = 0; j < jobs.size(); ++j)
      for (size_t r = 0; r < jobs[j].n; ++r) refs[next[size_t(jobs[j].rows[r])]++] = {uint32_t(j), r};
  }
  const bool l2 = first.p_.metric == Metric::kL2;
  const size_t d = first.p_.d;
  // A query's jobs of one group are searched as one index holding all their shards (see index.h):
  // the query's jobs sorted by group (stable), then every run of two or more jobs checked: no
  // spilled copies (a SOAR copy's reference is per shard), no leaf given twice.
  bool any_spill = false;
  for (const Index* x : order) any_spill = any_spill || x->spill_;
  {
    LeafStamps& seen = LeafStamps::local(first.nleaves_);
    for (size_t i = 0; i < nq; ++i) {
      auto by_group = [&](const std::pair<uint32_t, size_t>& x, const std::pair<uint32_t, size_t>& y) {
        return jobs[x.first].group < jobs[y.first].group;
      };
      std::stable_sort(refs.begin() + start[i], refs.begin() + start[i + 1], by_group);
      for (size_t a = start[i]; a < start[i + 1];) {
        size_t z = a + 1;
        while (z < start[i + 1] && jobs[refs[z].first].group == jobs[refs[a].first].group) ++z;
        if (z - a > 1) {
          if (any_spill) throw InvalidArgument("shards with spilled (SOAR) copies cannot share a group");
          seen.next();
          for (size_t t = a; t < z; ++t) {
            const LeafJob& job = jobs[refs[t].first];
            size_t m = 0;
            const int32_t* li = job.row(refs[t].second, m);
            for (size_t j = 0; j < m; ++j)
              if (li[j] >= 0 && !seen.mark(size_t(li[j])))
                throw InvalidArgument("leaf " + std::to_string(li[j]) + " is given to two shards of one group (query " +
                                      std::to_string(i) + ")");
          }
        }
        a = z;
      }
    }
  }
  size_t chunk = std::max<size_t>(1, std::min<size_t>(64, nq / (size_t(std::max(1, nthreads)) * 8)));
  parallel_for(nq, nthreads, chunk, [&](size_t b, size_t e) {
    static thread_local Scratch s;
    static thread_local MergeScratch ms;
    static thread_local std::vector<const Index*> owner;
    owner.resize(first.nleaves_);
    std::vector<float> lD;
    std::vector<int64_t> lI;
    std::vector<MergeList> lists;
    for (size_t i = b; i < e; ++i) {
      const size_t a = start[i], z = start[i + 1];
      float* Di = D + i * k;
      int64_t* Ii = I + i * k;
      if (a == z) {
        std::fill(Di, Di + k, l2 ? kPadBest : -kPadBest);
        std::fill(Ii, Ii + k, int64_t(-1));
        continue;
      }
      size_t nruns = 1;
      for (size_t t = a + 1; t < z; ++t) nruns += jobs[refs[t].first].group != jobs[refs[t - 1].first].group;
      lD.resize(nruns * k);
      lI.resize(nruns * k);
      s.share_query = true;
      s.query_ready = s.lut_ready = false;
      size_t run = 0;
      for (size_t t0 = a; t0 < z; ++run) {
        size_t t1 = t0 + 1;
        while (t1 < z && jobs[refs[t1].first].group == jobs[refs[t0].first].group) ++t1;
        float* rD = nruns == 1 ? Di : lD.data() + run * k;
        int64_t* rI = nruns == 1 ? Ii : lI.data() + run * k;
        if (t1 - t0 == 1) {
          const LeafJob& job = jobs[refs[t0].first];
          const size_t r = refs[t0].second;
          size_t m = 0;
          s.given_leaves = job.row(r, m);
          s.given_n = m;
          shards[job.shard]->search_one(q + i * d, k, m, static_cast<size_t>(job.reorder_k[r]), s, rD, rI);
        } else {
          search_group(shards, jobs, refs.data() + t0, t1 - t0, q + i * d, k, owner.data(), s, rD, rI);
        }
        t0 = t1;
      }
      if (nruns > 1) {
        lists.resize(nruns);
        for (size_t t = 0; t < nruns; ++t) lists[t] = {lD.data() + t * k, lI.data() + t * k, k};
        merge_lists(lists.data(), lists.size(), k, l2, false, ms, Di, Ii);
      }
    }
    s.given_leaves = nullptr;
    s.share_query = s.query_ready = s.lut_ready = false;
    release_large_scratch(s);
  });
}

// Leaf selection reads the whole centre table for every query (L x d floats: 485 KB for 316 leaves
// of 384 dimensions, about a core's L2 cache). From this size on, a 16-bit integer copy of the
// table (half the bytes, a quarter of the instructions) is read first, and the float scores are
// computed only for the leaves whose coarse score leaves them a chance (see select_leaves_coarse).
constexpr size_t kCoarseProbeMinBytes = size_t(128) << 10;

void Index::build_probe_table() {
  const size_t L = probe_centers_.size() / p_.d;  // (nleaves_ may not be set yet: loading)
  probe_table_ = CenterTable();
  probe_table_.build(probe_centers_.data(), L, p_.d);
  // AVQ_COARSE_PROBE=0 (read when a table is built) turns the coarse pass off: the answers are the
  // same either way, so this only serves to time it or to rule it out.
  const char* env = std::getenv("AVQ_COARSE_PROBE");
  const bool off = env != nullptr && std::strcmp(env, "0") == 0;
  if (!off && probe_centers_.size() * sizeof(float) >= kCoarseProbeMinBytes) probe_table_.build_coarse();
}

// Best nprobe leaves by <q, c> (dot, cosine) or -||q - c||^2 (l2); ties: lower id. Fills s.leaf_sel.
// The leaves and their order are those of dot_t16's float scores (a fixed summation order) whichever
// pass selects them; the scores kept beside them are the coarse pass's when it decided alone.
void Index::select_leaves(const float* q, size_t nprobe, Scratch& s) const {
  const size_t L = nleaves_;
  if (nprobe < L && probe_table_.has_coarse() && select_leaves_coarse(q, nprobe, s)) return;
  s.leaf_scores.resize(probe_table_.ngroups * 16);
  probe_table_.score(q, p_.metric != Metric::kL2, s.leaf_scores.data());
  select_top(s.leaf_scores.data(), nullptr, L, nprobe, s);
}

size_t Index::select_leaves_by_margin(const float* q, size_t nprobe, Scratch& s) const {
  // Every centre's float score (the float pass of select_leaves: the same scores, so the leaves
  // chosen at margin 0 are select_leaves' own), the best, and how many are within the margin.
  const size_t L = nleaves_, d = p_.d;
  s.leaf_scores.resize(probe_table_.ngroups * 16);
  probe_table_.score(q, true, s.leaf_scores.data());
  const float* score = s.leaf_scores.data();
  float best = -std::numeric_limits<float>::infinity();
  for (size_t l = 0; l < L; ++l) best = std::max(best, score[l]);
  double qq = 0;
  for (size_t j = 0; j < d; ++j) qq += double(q[j]) * q[j];
  const float cut = static_cast<float>(double(best) - double(s.leaf_margin) * std::sqrt(qq));
  size_t within = 0;
  for (size_t l = 0; l < L; ++l) within += score[l] >= cut;
  const size_t w = std::min(L, std::max(nprobe, within));
  select_top(score, nullptr, L, w, s);
  return w;
}

// Best nprobe of n leaves (leaf[i], or i when leaf is null) by score[i]; ties: lower leaf id (one
// 64-bit key per leaf: order-preserving bits of the score, then the inverted leaf id).
void Index::select_top(const float* score, const uint32_t* leaf, size_t n, size_t nprobe, Scratch& s) const {
  // The nprobe-th largest score by SIMD selection; keys only for the scores at or above it (nprobe
  // of them, more on ties), sorted, the first nprobe kept.
  const float cut =
      nprobe < n ? topk::kth_largest_f32(score, n, nprobe - 1, s.lo_tmp) : -std::numeric_limits<float>::infinity();
  s.keys.clear();
  for (size_t i = 0; i < n; ++i) {
    if (!(score[i] >= cut)) continue;
    const uint32_t l = leaf ? leaf[i] : static_cast<uint32_t>(i);
    s.keys.push_back((uint64_t(order_bits(score[i])) << 32) | uint32_t(~l));
  }
  std::sort(s.keys.begin(), s.keys.end(), std::greater<uint64_t>());
  const size_t w = std::min(nprobe, s.keys.size());
  s.leaf_sel.resize(w);
  for (size_t i = 0; i < w; ++i) {
    const uint64_t key = s.keys[i];
    s.leaf_sel[i] = {from_order_bits(uint32_t(key >> 32)), ~uint32_t(key)};
  }
}

// Two passes giving exactly select_top's answer over the float scores f_l of every leaf:
// 1. the query as 16-bit integers (q ~ sq qi, |q_j - sq qi_j| <= dq) against the 16-bit centres
//    (x_l ~ scale_l xi_l, error <= err_l): exact integer sums, hence coarse scores
//    a_l = sq scale_l <qi, xi_l> with |<q, x_l> - a_l| <= dq ||x_l||_1 + sq ||qi||_1 err_l; the float
//    sum of d products (f_l) is within 1.01 d 2^-24 max|q| ||x_l||_1 of <q, x_l>; under l2 (score
//    2 <q, x> - ||x||^2) both double, plus the rounding of the combination; a margin of 2^-10 of
//    the bound, 2^-20 |a_l| and d FLT_MIN (underflow) covers the bounds' own arithmetic: e_l;
// 2. T = the nprobe-th largest lower bound a_l - e_l (rounded down to a float): at least nprobe
//    leaves have f_l >= T, so every leaf of the answer (ties included) has a_l + e_l >= T;
// 3. those candidates' intervals [a_l - e_l, a_l + e_l] (each holding f_l) merged where they
//    overlap: the groups are in strict order of f (every f of a group is below every f of the
//    groups before it). A group of one leaf is placed by its interval alone; the leaves of the
//    others, up to the nprobe-th position, get their float scores (dot_seq_gather: dot_t16's
//    order, bit for bit) and are ordered by them, ties to the lower id: select_top's answer.
//    (Measured on 316 leaves of 384 dimensions: 6.2 candidates for 6 probes, 20.7 for 20; about
//    half of the 6-probe queries need no float row, and the float rows are cache misses, as the
//    coarse table is what every query reads.)
// Returns false (the caller runs the float pass) for a zero query, a bound that is not finite, or
// when more than a quarter of the leaves would need their float score.
bool Index::select_leaves_coarse(const float* q, size_t nprobe, Scratch& s) const {
  const size_t L = nleaves_, d = p_.d;
  const bool l2 = p_.metric == Metric::kL2;
  const CenterTable& t = probe_table_;
  float qmx = 0.f;
  for (size_t j = 0; j < d; ++j) qmx = std::max(qmx, std::fabs(q[j]));
  if (!(qmx > 0.f)) return false;
  // qi_j = q_j / sq rounded: x is within qmax 2^-23 of q_j / sq, the float x +- 0.5 within
  // (qmax + 1) 2^-24 of its exact value, so |q_j / sq - qi_j| <= 0.5 + qmax 2^-21 (clamping
  // included): |q_j - sq qi_j| <= dq.
  const double sq = double(qmx) / t.qmax, dq = sq * (0.5 + t.qmax * std::ldexp(1.0, -21));
  const float inv = static_cast<float>(t.qmax / double(qmx));
  s.q16.resize(2 * t.dp);
  s.q16[2 * t.dp - 1] = 0;
  int32_t q1 = 0;  // ||qi||_1 <= d * 32767: no overflow
  for (size_t j = 0; j < d; ++j) {
    const float x = q[j] * inv;
    const int32_t r = std::max(-t.qmax, std::min(t.qmax, static_cast<int32_t>(x + (x >= 0.f ? 0.5f : -0.5f))));
    s.q16[j] = static_cast<int16_t>(r);
    q1 += r < 0 ? -r : r;
  }
  s.isc.resize(t.ngroups * 16);
  kernels::active().dot_t16_i16(s.q16.data(), t.ti.data(), t.ngroups, t.dp, s.isc.data());
  // e_l = A ||x_l||_1 + B err_l + r1 |a_l| + r2 ||x_l||^2 + tiny: the terms above with their margins;
  // computed in float: a few roundings of 2^-24 each, well inside the 2^-10 and 2^-20 margins.
  const double m = (l2 ? 2.0 : 1.0) * (1.0 + std::ldexp(1.0, -10));
  const float A = static_cast<float>((dq + 1.01 * double(d) * std::ldexp(1.0, -24) * qmx) * m);
  const float B = static_cast<float>(sq * double(q1) * m);
  const float r1 = std::ldexp(1.f, -20) + (l2 ? std::ldexp(1.f, -21) : 0.f), r2 = l2 ? std::ldexp(1.f, -21) : 0.f;
  const float tiny = static_cast<float>(double(d) * std::numeric_limits<float>::min());
  const float am = static_cast<float>(l2 ? 2.0 * sq : sq), nm = l2 ? 1.f : 0.f, r3 = std::ldexp(1.f, -22);
  s.approx.resize(L);
  s.bound.resize(L);
  s.lo.resize(L);
  const float *scale = t.scale.data(), *l1 = t.l1.data(), *err = t.err.data(), *n2 = t.norm2.data();
  const int32_t* isc = s.isc.data();
  float *ap = s.approx.data(), *bd = s.bound.data(), *lo = s.lo.data();
  int bad = 0;
  for (size_t l = 0; l < L; ++l) {
    const float a = am * scale[l] * static_cast<float>(isc[l]) - nm * n2[l];
    const float e = A * l1[l] + B * err[l] + r1 * std::fabs(a) + r2 * n2[l] + tiny;
    // a - e lowered by more than its rounding (the float kept is not above the exact a - e)
    lo[l] = (a - e) - (r3 * std::fabs(a - e) + tiny);
    bad |= !(std::fabs(a) + e <= 1e37f);
    ap[l] = a;
    bd[l] = e;
  }
  const bool finite = !bad;
  if (!finite) return false;
  const float cut = topk::kth_largest_f32(s.lo.data(), L, nprobe - 1, s.lo_tmp);
  s.cand_leaf.clear();
  for (uint32_t l = 0; l < L; ++l)
    if (ap[l] + bd[l] >= cut) s.cand_leaf.push_back(l);  // (rounding: as for lo, inside the margins)
  const size_t nc = s.cand_leaf.size();
  if (nc * 4 > L) return false;
  // Candidates by upper bound, best first (ties: lower id; the order within a group does not
  // matter), as keys: order-preserving bits of the bound, then the inverted leaf id.
  auto hi_of = [&](uint32_t l) {
    const float h = ap[l] + bd[l];
    return h + (r3 * std::fabs(h) + tiny);  // raised by more than its rounding, as lo is lowered
  };
  s.keys.clear();
  for (uint32_t l : s.cand_leaf) s.keys.push_back((uint64_t(order_bits(hi_of(l))) << 32) | uint32_t(~l));
  std::sort(s.keys.begin(), s.keys.end(), std::greater<uint64_t>());
  auto leaf_at = [&](size_t i) { return ~uint32_t(s.keys[i]); };
  // Groups [g, group_end[g]) of the sorted candidates: a candidate joins the group before it when
  // its upper bound reaches that group's lowest lower bound.
  s.group_end.assign(nc, 0);
  size_t g0 = 0, need = 0;
  float glo = lo[leaf_at(0)];
  for (size_t i = 1; i <= nc; ++i) {
    if (i < nc && hi_of(leaf_at(i)) >= glo) {
      glo = std::min(glo, lo[leaf_at(i)]);
      continue;
    }
    s.group_end[g0] = static_cast<uint32_t>(i);
    if (i - g0 > 1 && g0 < nprobe) need += i - g0;
    if (i < nc) {
      g0 = i;
      glo = lo[leaf_at(i)];
    }
  }
  // The float scores of the groups of several leaves that start before the cut, in one gather.
  s.cand_rows.resize(need);
  s.cand_score.resize(need);
  size_t nf = 0;
  for (size_t g = 0; g < nprobe && g < nc; g = s.group_end[g]) {
    if (s.group_end[g] - g == 1) continue;
    for (size_t i = g; i < s.group_end[g]; ++i) {
      const float* row = probe_centers_.data() + size_t(leaf_at(i)) * d;
      // A row's first lines (the hardware prefetcher streams the rest): its misses start now.
      for (size_t off = 0; off < std::min(d * sizeof(float), kReorderPrefetchBytes); off += 64)
        __builtin_prefetch(reinterpret_cast<const char*>(row) + off);
      s.cand_rows[nf++] = row;
    }
  }
  if (need > 0) kernels::active().dot_seq_gather(q, s.cand_rows.data(), need, d, s.cand_score.data());
  // The answer: the groups in order; within a group, by float score, ties to the lower id.
  s.leaf_sel.clear();
  nf = 0;
  for (size_t g = 0; g < nc && s.leaf_sel.size() < nprobe; g = s.group_end[g]) {
    const size_t e = s.group_end[g];
    if (e - g == 1) {
      s.leaf_sel.push_back({ap[leaf_at(g)], leaf_at(g)});
      continue;
    }
    s.group_keys.clear();
    for (size_t i = g; i < e; ++i, ++nf) {
      const uint32_t l = leaf_at(i);
      const float f = l2 ? (s.cand_score[nf] + s.cand_score[nf]) - t.norm2[l] : s.cand_score[nf];
      s.group_keys.push_back((uint64_t(order_bits(f)) << 32) | uint32_t(~l));
    }
    std::sort(s.group_keys.begin(), s.group_keys.end(), std::greater<uint64_t>());
    for (size_t i = 0; i < s.group_keys.size() && s.leaf_sel.size() < nprobe; ++i)
      s.leaf_sel.push_back({from_order_bits(uint32_t(s.group_keys[i] >> 32)), ~uint32_t(s.group_keys[i])});
  }
  return true;
}

// The query as the scan and the re-scoring use it, in s.q (and s.q_unscale); kept for the other
// shards of a query when s.share_query (search_leaves_multi: already prepared by a shard with the
// same quantizer).
void Index::prepare_query(const float* q_in, Scratch& s) const {
  if (s.query_ready) return;
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
  s.query_ready = s.share_query;
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
  prepare_query(q_in, s);
  if (s.given_leaves) {
    s.leaf_sel.clear();
    for (size_t j = 0; j < s.given_n; ++j)
      if (s.given_leaves[j] >= 0) s.leaf_sel.push_back({0.f, static_cast<uint32_t>(s.given_leaves[j])});
  } else if (s.leaf_margin >= 0.f) {
    nprobe = select_leaves_by_margin(s.q.data(), nprobe, s);
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
  kt.scan_lut16(leaves_[li].spill_p, ng, layout_.num_blocks_pad, s.lut8.data(), s.acc.data());
  const float* pb = p_.metric == Metric::kL2 ? sl.bias.data() : nullptr;
  const size_t cnt =
      kt.filter_scores(s.acc.data(), pb, sl.n, inv_scale, bias, s.topn.threshold(), s.idx.data(), s.sc.data());
  s.topn.append(s.sc.data(), s.idx.data(), cnt, li | kSpillLeafFlag);
}

// The query's 8-bit lookup table in s.lut8, its offset and inverse scale (s.lut_offset,
// s.lut_inv_scale): depend only on the prepared query and the codebooks.
void Index::build_lut(const float* q, Scratch& s) const {
  const kernels::KernelTable& kt = kernels::active();
  const size_t d = p_.d, M = layout_.num_blocks, Mp = layout_.num_blocks_pad;
  // Float LUT of <q_m, C_m[k]>, then 8-bit quantisation with a per-block offset and one global
  // scale chosen so that the 16-bit accumulators cannot overflow.
  s.lut.resize(Mp * 16);
  s.lut8.resize(Mp * 16);
  std::fill(s.lut8.begin() + M * 16, s.lut8.end(), uint8_t(0));  // the padding block scores 0
  s.blk_mn.resize(M);
  s.blk_mx.resize(M);
  kt.lut_blocks(q, codebooks_t_.data(), d, layout_.dims_per_block, s.lut.data(), s.blk_mn.data(), s.blk_mx.data());
  double range_sum = 0, range_max = 0, offset = 0;
  for (size_t m = 0; m < M; ++m) {
    const double range = double(s.blk_mx[m]) - s.blk_mn[m];
    offset += s.blk_mn[m];
    range_sum += range;
    range_max = std::max(range_max, range);
  }
  double scale = 1.0;
  if (range_max > 0) scale = std::min(255.0 / range_max, (65535.0 - double(M)) / range_sum);
  scale = std::min(scale, 1e30);  // a negligible LUT (tiny l2 query) must not overflow the float scale
  // Round half up (entries are >= 0); the float product is the same at every SIMD level.
  const float fs = static_cast<float>(scale);
  kt.lut_quantize(s.lut.data(), M * 16, fs, s.lut8.data());
  scale = fs;
  s.lut_offset = offset;
  s.lut_inv_scale = static_cast<float>(1.0 / scale);
}

void Index::search_one(const float* q_in, size_t k, size_t nprobe, size_t reorder_k, Scratch& s, float* D,
                       int64_t* I) const {
  // 1. Padding, the prepared query, the leaves to probe.
  size_t probed = 0;
  const size_t asked = nprobe;
  const float* q = start_query(q_in, k, nprobe, probed, s, D, I);
  if (!q) return;
  if (s.leaf_margin >= 0.f)  // leaf_margin: the budget grows as sqrt(leaves / asked)
    reorder_k = margin_reorder_k(reorder_k, nprobe, asked, ntotal_);
  if (spill_)  // SOAR: the probed leaves' spilled copies are probed too
    for (size_t t = 0; t < nprobe; ++t) probed += spill_->lists[s.leaf_sel[t].second].n;

  // 2. The lookup table (search_leaves_multi: built once per query for every shard).
  if (!s.lut_ready) {
    build_lut(q, s);
    s.lut_ready = s.share_query;
  }

  // 3. Scan the probed leaves; keep the best `cap` approximate scores.
  const bool reorder = p_.reorder != ReorderMode::kNone;
  // At most the number of vectors probed (and at least 1): bounded before the top-N sizing.
  // SOAR: a vector can come twice (both copies): keep twice as many, then `want` distinct ones.
  const size_t want = std::max<size_t>(1, std::min(reorder ? std::max(k, reorder_k) : k, probed));
  s.topn.reset(spill_ ? 2 * want : want);
  scan_probed(q, nprobe, s);
  std::vector<Cand>& cands = s.topn.finish(!reorder);
  if (spill_) dedup_spilled(cands, *spill_, s.seen, want, !reorder, s.exact, s.lo_tmp, s.ties);

  // 4. Exact re-scoring of the candidates, output.
  finish_query(cands, q, k, nullptr, s, D, I);
}

// Scans the leaves s.leaf_sel[0..nprobe) (and their spilled copies) with the query's lookup table
// (s.lut8), appending to s.topn; candidates carry the leaf's id.
void Index::scan_probed(const float* q, size_t nprobe, Scratch& s) const {
  const kernels::KernelTable& kt = kernels::active();
  const size_t d = p_.d, Mp = layout_.num_blocks_pad;
  const bool l2 = p_.metric == Metric::kL2;
  const double offset = s.lut_offset;
  const float inv_scale = s.lut_inv_scale;
  const size_t cap = s.topn.cap();
  // <q, mean> of every probed leaf in one call (dot_gather's sums are dot's, bit for bit).
  s.bias_rows.resize(nprobe);
  s.leaf_bias.resize(nprobe);
  for (size_t t = 0; t < nprobe; ++t) s.bias_rows[t] = resid_centers_.data() + size_t(s.leaf_sel[t].second) * d;
  kt.dot_gather(q, s.bias_rows.data(), nprobe, d, s.leaf_bias.data());
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
    const float bias = s.leaf_bias[t] + static_cast<float>(offset);
    size_t cnt;
    if (!l2 && leaf.n > cap && s.topn.unbounded()) {
      // First leaf: cut in the accumulators' domain instead of appending the whole leaf.
      const float thr = topk::first_leaf_threshold(s.acc.data(), leaf.n, cap, inv_scale, bias);
      cnt = kt.filter_scores(s.acc.data(), nullptr, leaf.n, inv_scale, bias, thr, s.idx.data(), s.sc.data());
      if (cnt < cap)  // scores merged by rounding: the exact path
        cnt = kt.filter_scores(s.acc.data(), nullptr, leaf.n, inv_scale, bias, s.topn.threshold(), s.idx.data(),
                               s.sc.data());
      s.topn.append(s.sc.data(), s.idx.data(), cnt, li);
      s.topn.tighten();
    } else {
      cnt = kt.filter_scores(s.acc.data(), l2 ? leaf.scan_p : nullptr, leaf.n, inv_scale, bias, s.topn.threshold(),
                             s.idx.data(), s.sc.data());
      s.topn.append(s.sc.data(), s.idx.data(), cnt, li);
    }
    if (spilled) scan_spilled(li, kt, inv_scale, bias, s);  // after: it reuses s.acc
  }
}

// Exact re-scoring of the candidates (unless reorder is none), the best k in the metric's units
// into D, I. owner: null when every candidate is this index's; else owner[leaf] is the index
// (a shard with this quantizer) holding the candidate's leaf.
void Index::finish_query(std::vector<Cand>& cands, const float* q, size_t k, const Index* const* owner, Scratch& s,
                         float* D, int64_t* I) const {
  const kernels::KernelTable& kt = kernels::active();
  const size_t d = p_.d;
  const bool l2 = p_.metric == Metric::kL2;
  auto holder = [&](uint32_t leaf) -> const Index& { return owner ? *owner[leaf] : *this; };
  if (p_.reorder != ReorderMode::kNone && !cands.empty()) {
    const size_t nc = cands.size();
    s.exact.resize(nc);
    if (p_.reorder == ReorderMode::kFloat32) {
      s.rows.resize(nc);
      const size_t pf_bytes = std::min(d * sizeof(float), kReorderPrefetchBytes);
      for (size_t c = 0; c < nc; ++c) {
        const Index& x = holder(cands[c].leaf);
        s.rows[c] = x.rvec_p_ + (x.leaves_[cands[c].leaf].row_off + cands[c].pos) * d;
        const char* row = reinterpret_cast<const char*>(s.rows[c]);
        for (size_t off = 0; off < pf_bytes; off += 64) __builtin_prefetch(row + off);
      }
      kt.dot_gather(q, s.rows.data(), nc, d, s.exact.data());
    } else if (p_.reorder == ReorderMode::kFloat16) {
      s.rows16.resize(nc);
      const size_t hw = f16_row_width(), pf_bytes = std::min(hw * sizeof(uint16_t), kReorderPrefetchBytes);
      for (size_t c = 0; c < nc; ++c) {
        const Index& x = holder(cands[c].leaf);
        s.rows16[c] = x.rvec16_p_ + (x.leaves_[cands[c].leaf].row_off + cands[c].pos) * hw;
        for (size_t off = 0; off < pf_bytes; off += 64)
          __builtin_prefetch(reinterpret_cast<const char*>(s.rows16[c]) + off);
      }
      kt.dot_f16_gather(q, s.rows16.data(), nc, d, s.exact.data());
      for (size_t c = 0; c < nc; ++c) {  // times the row's scale (a power of two)
        float sc;
        std::memcpy(&sc, s.rows16[c] + d, sizeof(float));
        s.exact[c] *= sc;
      }
    } else {
      s.w.resize(d);
      for (size_t j = 0; j < d; ++j) s.w[j] = q[j] * int8_scale_[j];  // (the shards' scales are this one's)
      s.rows8.resize(nc);
      const size_t pf_bytes = std::min(d, kReorderPrefetchBytes);
      for (size_t c = 0; c < nc; ++c) {
        const Index& x = holder(cands[c].leaf);
        s.rows8[c] = x.rvec8_p_ + (x.leaves_[cands[c].leaf].row_off + cands[c].pos) * d;
        for (size_t off = 0; off < pf_bytes; off += 64)
          __builtin_prefetch(reinterpret_cast<const char*>(s.rows8[c]) + off);
      }
      kt.dot_i8_gather(s.w.data(), s.rows8.data(), nc, d, s.exact.data());
    }
    for (size_t c = 0; c < nc; ++c) {
      float v = s.exact[c];
      if (l2) v += holder(cands[c].leaf).leaves_[cands[c].leaf].bias_p[cands[c].pos];
      cands[c].score = v;
      s.exact[c] = v;
    }
    const size_t keep = std::min(k, nc);
    if (keep < nc) topk::keep_best(cands.data(), nc, s.exact.data(), keep, s.lo_tmp, s.ties);  // partial_sort's set
    std::sort(cands.begin(), cands.begin() + keep, Better{});
    cands.resize(keep);
  }

  // Output in the metric's units.
  float qn2 = 0;
  if (l2) {
    double t = 0;
    for (size_t j = 0; j < d; ++j) t += double(q[j]) * q[j];
    qn2 = static_cast<float>(t);
  }
  const size_t nout = std::min(k, cands.size());
  for (size_t j = 0; j < nout; ++j) {
    const Cand& c = cands[j];
    I[j] = holder(c.leaf).leaves_[c.leaf].ids_p[c.pos];
    D[j] = l2 ? std::max(0.f, qn2 - 2.f * c.score) : c.score * s.q_unscale;
  }
}

}  // namespace avq
