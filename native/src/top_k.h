// Top-k selection for search: the candidate record and its order, k-th largest selection, and
// the top-N buffer of approximate scores (search.cpp, faiss_import.cpp).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

namespace avq {
namespace topk {

// A candidate: its score and where it is stored (leaf, position in the leaf).
struct Cand {
  float score;
  uint32_t leaf, pos;
};

// The order of results: higher score first; ties: lower leaf, then lower position.
inline bool better(const Cand& a, const Cand& b) {
  if (a.score != b.score) return a.score > b.score;
  if (a.leaf != b.leaf) return a.leaf < b.leaf;
  return a.pos < b.pos;
}

// `better` as a function object, so that the standard algorithms inline it (a function pointer
// is called through).
struct Better {
  bool operator()(const Cand& a, const Cand& b) const { return better(a, b); }
};

// The (k+1)-th largest of src[0..n) (k < n), src unchanged: quickselect whose order-keeping
// three-way partitions are the SIMD kernel partition_f32. scratch: 3 (n + 16) floats.
float kth_largest_f32(const float* src, size_t n, size_t k, std::vector<float>& scratch);

// Moves the `keep` best of c[0..n) by `better` to c[0..keep), in no order (keep < n): the set
// nth_element with Better would keep, found by SIMD selection on score[i] = c[i].score (the
// keep-th best score, the candidates above it, then its ties of lowest (leaf, pos)). sel: scratch
// of kth_largest_f32; ties: scratch.
void keep_best(Cand* c, size_t n, const float* score, size_t keep, std::vector<float>& sel, std::vector<Cand>& ties);

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

// A score threshold for the first leaf of a search (scores s(x) = float(x) * a + b of its n 16-bit
// accumulators, cap < n): a histogram of acc >> shift (64 bins; every 4th accumulator from 256 on)
// finds the bin holding about the cap-th largest accumulator, and the threshold is the score just
// below that bin, so that about cap of the n scores pass `s > threshold`. Cheaper than appending
// the whole leaf and cutting it (the scores of a first leaf all pass an empty top-N). The caller
// checks that at least cap passed (sampling and float rounding can fall short) and filters again
// without it otherwise; then every rejected score has cap strictly better ones, so the search's
// result is unchanged.
float first_leaf_threshold(const uint16_t* acc, size_t n, size_t cap, float a, float b);

constexpr size_t kTopNSlack = 256;  // top-N buffer room above cap before a cut

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
  size_t cap() const { return cap_; }
  // Nothing kept and no cut yet: every score would be accepted.
  bool unbounded() const { return n_ == 0 && thr_ == -std::numeric_limits<float>::infinity(); }
  // Cuts back to the cap best now if there are at least cap (the threshold rises to the cut).
  void tighten() {
    if (n_ >= cap_) shrink();
  }
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
  std::vector<Cand>& finish(bool sorted);

 private:
  // Cuts the buffer back to the cap best; the threshold rises to the cut.
  void shrink();

  size_t cap_ = 1, limit_ = 2, n_ = 0;
  std::vector<float> scores_;
  std::vector<uint64_t> refs_;  // (leaf << 32) | position
  std::vector<Cand> out_;
  std::vector<float> sel_;
  float thr_ = 0;
};

}  // namespace topk
}  // namespace avq
