#include "top_k.h"

#include <cmath>

#include "kernels/kernels.h"

namespace avq {
namespace topk {

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

void keep_best(Cand* c, size_t n, const float* score, size_t keep, std::vector<float>& sel, std::vector<Cand>& ties) {
  const float cut = kth_largest_f32(score, n, keep - 1, sel);
  ties.clear();
  size_t out = 0;
  for (size_t i = 0; i < n; ++i) {
    if (c[i].score > cut)
      c[out++] = c[i];
    else if (c[i].score == cut)
      ties.push_back(c[i]);
  }
  const size_t need = keep - out;  // 1 <= need <= ties.size()
  if (need < ties.size()) std::nth_element(ties.begin(), ties.begin() + (need - 1), ties.end(), Better{});
  std::copy(ties.begin(), ties.begin() + need, c + out);
}

float first_leaf_threshold(const uint16_t* acc, size_t n, size_t cap, float a, float b) {
  const float none = -std::numeric_limits<float>::infinity();
  if (cap == 0 || cap >= n) return none;
  // From 256 accumulators on, every 4th estimates the distribution: the threshold is the bin where
  // the sample reaches its share of cap plus about two standard deviations (the caller filters
  // again without the threshold in the rare case that fewer than cap pass).
  const size_t step = n >= 256 ? 4 : 1;
  const size_t m = (n + step - 1) / step;
  const double share = static_cast<double>(cap) * static_cast<double>(m) / static_cast<double>(n);
  const size_t need = step == 1 ? cap : static_cast<size_t>(share + 2.0 * std::sqrt(share) + 1.0);
  if (need >= m) return none;
  // Four interleaved maxima and histograms: no chain of dependent updates through one counter.
  unsigned mx4[4] = {0, 0, 0, 0};
  size_t i = 0;
  for (; i + 3 * step < n; i += 4 * step)
    for (int j = 0; j < 4; ++j) mx4[j] = std::max<unsigned>(mx4[j], acc[i + j * step]);
  for (; i < n; i += step) mx4[0] = std::max<unsigned>(mx4[0], acc[i]);
  const unsigned mx = std::max(std::max(mx4[0], mx4[1]), std::max(mx4[2], mx4[3]));
  int shift = 0;
  while ((mx >> shift) >= 64) ++shift;
  uint16_t h4[4][64] = {};
  for (i = 0; i + 3 * step < n; i += 4 * step)
    for (int j = 0; j < 4; ++j) ++h4[j][acc[i + j * step] >> shift];
  for (; i < n; i += step) ++h4[0][acc[i] >> shift];
  uint16_t hist[64];
  for (int j = 0; j < 64; ++j) hist[j] = static_cast<uint16_t>(h4[0][j] + h4[1][j] + h4[2][j] + h4[3][j]);
  size_t seen = 0;
  unsigned bin = (mx >> shift) + 1;
  while (bin > 0 && seen < need) seen += hist[--bin];
  const unsigned t = bin << shift;  // about cap accumulators (at least cap when step = 1) are >= t
  if (t == 0) return none;
  // The filter's own arithmetic (separately rounded), so that acc >= t passes unless rounding
  // merges s(t) with s(t - 1).
  float s = static_cast<float>(t - 1) * a;
  s = s + b;
  return s;
}

std::vector<Cand>& TopN::finish(bool sorted) {
  if (n_ > cap_) shrink();
  out_.resize(n_);
  for (size_t i = 0; i < n_; ++i)
    out_[i] = {scores_[i], static_cast<uint32_t>(refs_[i] >> 32), static_cast<uint32_t>(refs_[i])};
  if (sorted) std::sort(out_.begin(), out_.end(), Better{});
  return out_;
}

void TopN::shrink() {
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

}  // namespace topk
}  // namespace avq
