// Anisotropic product quantization (Guo et al., "Accelerating Large-Scale Inference with
// Anisotropic Vector Quantization", ICML 2020).
//
// Loss of quantizing x by x~ with residual r = x - x~ and u = x / ||x||:
//   L(x, x~) = ||r||^2 + (eta - 1) (u . r)^2        (eta * ||r_par||^2 + ||r_perp||^2)
// eta follows from the score threshold T (paper Sec. 3; the closed form is derived in the
// project brief, section 1): with alpha = arccos(T / ||x||),
//   eta = 1 + cos(alpha) sin^(d-1)(alpha) / I_d(alpha),   I_d(alpha) = int_0^alpha sin^d(t) dt.
// ScaNN uses the large-d limit eta = (d - 1) T^2 / (||x||^2 - T^2), which is < 1 when
// T < ||x|| / sqrt(d) (and then does nothing).
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "common.h"

namespace avq {

constexpr int kCentersPerBlock = 16;  // 4-bit codes
constexpr double kMaxEta = 1e4;
constexpr size_t kMaxBlocks = 8192;  // 16-bit accumulation keeps >= 7 table levels per block       // cap when T
                                     // approaches ||x|| (the exact eta diverges)

// Exact eta for t = T / ||x|| in [0, 1) and dimension d (>= 1). t <= 0 gives 1.
double eta_exact(double t, int d);
// ScaNN's eta (d - 1) t^2 / (1 - t^2) for t = T / ||x||; may be < 1.
double eta_scann(double t, int d);

// Per-point eta for many norms: tabulates eta_exact on a fine grid once and interpolates
// (relative error < 1e-6), or evaluates ScaNN's closed form.
class EtaFunction {
 public:
  // threshold: T (> 0); fixed_eta > 0 overrides the threshold (eta for every point);
  // scann_formula: use ScaNN's limit formula instead of the exact one.
  EtaFunction(double threshold, double fixed_eta, bool scann_formula, int d);
  double operator()(double norm) const;
  bool plain() const { return plain_; }  // eta == 1 for every point (plain PQ)

 private:
  void build_grid() const;
  double threshold_, fixed_eta_;
  bool scann_, plain_;
  int d_;
  double unit_eta_ = 1.0;             // eta at ||x|| = 1 (every vector under cosine)
  mutable std::once_flag grid_once_;  // the grid is built on first use for another norm
  mutable std::vector<double> grid_;  // h(t) on [0, kGridMax], see .cpp
};

// How d dimensions are cut into blocks: blocks of dims_per_block, the last takes the remainder.
struct BlockLayout {
  size_t d = 0, dims_per_block = 0, num_blocks = 0, num_blocks_pad = 0;  // pad: even, >= 2
  std::vector<uint32_t> offset, dims;                                    // per block
  BlockLayout() = default;
  BlockLayout(size_t d, size_t dims_per_block);
  // Codebook layout: block m occupies floats [16 * offset[m], 16 * (offset[m] + dims[m])),
  // as (16, dims[m]) row-major; 16 * d floats in all.
  size_t codebook_size() const { return size_t(kCentersPerBlock) * d; }
};

// Scratch for encoding one point.
struct EncodeScratch {
  std::vector<float> norm2, par;  // (num_blocks, 16): ||r_m - C_m[k]||^2 and u_m . (r_m - C_m[k])
};

// Codebook in the encoding/LUT layout: per block m, (dims[m], 16) floats at 16 * offset[m].
void transpose_codebook(const BlockLayout& layout, const float* cb, float* cbt);

// Encodes residual r (d floats) with the transposed codebook cbt under the anisotropic loss with direction u
// (unit, d floats; nullptr or eta == 1 gives plain nearest-center PQ). Starts from the
// per-block nearest centers, then runs exact coordinate descent over blocks (each block takes
// the center minimising the total loss given the other blocks), at most `max_rounds` rounds,
// stopping when a round changes nothing. codes: num_blocks bytes (0..15). Returns the loss.
double encode_anisotropic(const float* r, const float* u, double eta, const BlockLayout& layout, const float* cbt,
                          uint8_t* codes, EncodeScratch& scratch, int max_rounds = 10);

struct CodebookTrainOptions {
  int kmeans_iterations = 10;
  size_t kmeans_sample = 16384;  // rows used by the per-block k-means initialisation (1k per centre)
  int avq_iterations = 8;        // alternations of (encode, least-squares codebook update); 0 = encode-only
  int cg_iterations = 12;
  uint64_t seed = 0;
  int nthreads = 1;
};

struct CodebookTrainStats {
  std::vector<double> loss;  // mean anisotropic loss after k-means and after each alternation
};

// Trains the (16, d) codebooks on residuals R (layout (n, d)) with per-point directions U
// (layout (n, d), unit rows, or all-zero rows for points without a direction) and weights eta
// (n). Initialised by per-block k-means (k-means++, plain L2), then alternates (a) anisotropic
// encoding of every point and (b) the joint least-squares codebook update
//   min_C sum_i (r_i - B_i c)^T W_i (r_i - B_i c),  W_i = I + (eta_i - 1) u_i u_i^T,
// solved by Jacobi-preconditioned conjugate gradients warm-started at the current codebook
// (empty codewords are kept). Deterministic for a seed, whatever the thread count.
std::vector<float> train_codebooks(const float* R, const float* U, const double* eta, size_t n,
                                   const BlockLayout& layout, const CodebookTrainOptions& opt, Monitor* mon,
                                   CodebookTrainStats* stats);

}  // namespace avq
