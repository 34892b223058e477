// k-means used by the partitioner (num_leaves centers over the data) and by the PQ codebook
// initialisation (16 centers per block over a few dimensions).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "common.h"

namespace avq {

// Centres laid out for fast scoring with kernels::dot_t16: transposed groups of 16, zero
// padded, plus squared norms. score() fills ngroups*16 floats where larger is better:
// <q, c> (by_dot) or 2 <q, c> - ||c||^2 (= ||q||^2 - ||q - c||^2, for L2).
struct CenterTable {
  size_t k = 0, d = 0, ngroups = 0;
  std::vector<float> t, norm2;
  void build(const float* c, size_t k, size_t d);
  void score(const float* q, bool by_dot, float* out) const;
  // score() for nq rows of q (row p at q + p*d) into out + p*ngroups*16: the same values, with
  // the table read once per 4 rows.
  void score_multi(const float* q, size_t nq, bool by_dot, float* out) const;

  // Optional coarse copy for the first pass of leaf selection (build_coarse): every centre as
  // 16-bit integers, x_l ~ scale[l] * xi_l with |xi_lj| <= kCoarseCentreMax, laid out for
  // kernels::dot_t16_i16 (dp pairs of dimensions); l1[l] >= ||x_l||_1 and err[l] >=
  // max_j |x_lj - scale[l] xi_lj|, so that a caller can bound the error of a coarse score; qmax: the
  // largest query integer that keeps every sum of d products within int32. Empty until built, and
  // left empty when d is too large for a useful qmax.
  static constexpr int32_t kCoarseCentreMax = 2047;
  std::vector<int16_t> ti;
  std::vector<float> scale, l1, err;
  size_t dp = 0;
  int32_t qmax = 0;
  void build_coarse();
  bool has_coarse() const { return !ti.empty(); }
  size_t bytes() const;  // memory held
};

// Index of the largest of s[0..k) (k >= 1), the lowest among equal maxima (what a running strict
// comparison gives), without its unpredictable branches. s must hold no NaN.
uint32_t argmax_first(const float* s, size_t k);

// Rows scored together by CenterTable::score_multi in bulk assignment against kp (padded)
// centres: 16, fewer for very many centres so that the scores stay within ~1 MB per thread.
inline size_t score_rows(size_t kp) {
  const size_t cap = (size_t(1) << 18) / (kp ? kp : 1);
  return cap < 1 ? 1 : (cap > 16 ? 16 : cap);
}

// Assigns each row of x (layout (n, d)) to its best center in c (layout (k, d)): the largest
// inner product when by_dot, else the smallest squared L2 distance. Ties go to the lower center
// index. out: n center ids; out_score (nullable): n best scores (dot or squared L2).
// Deterministic and identical at every SIMD level. O(n k d), parallel over rows.
void assign_centers(const float* x, size_t n, size_t d, const float* c, size_t k, bool by_dot, uint32_t* out,
                    float* out_score, int nthreads);

struct KMeansOptions {
  size_t k = 16;
  int iterations = 10;
  bool spherical = false;  // assignment by max inner product; centers renormalised to unit length
  bool kmeanspp = false;   // k-means++ seeding (else k distinct random rows)
  uint64_t seed = 0;
  int nthreads = 1;
  const char* stage = "k-means";
};

// Lloyd's k-means on x (layout (n, d)); returns centers, layout (k, d). Requires n >= 1; when
// n < k some centers are duplicates (perturbed). Empty clusters are re-seeded by splitting the
// largest cluster. Deterministic for a given seed whatever the thread count or SIMD level.
// `assign_out` (nullable) receives the final assignment of every row.
std::vector<float> train_kmeans(const float* x, size_t n, size_t d, const KMeansOptions& opt, Monitor* mon,
                                std::vector<uint32_t>* assign_out = nullptr);

}  // namespace avq
