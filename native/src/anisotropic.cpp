#include "anisotropic.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>

#include "kmeans.h"

namespace avq {

namespace {

constexpr double kGridMax = 0.999;
constexpr int kGridSize = 1024;

// R(alpha) = int_0^alpha (sin t / sin alpha)^d dt by composite Simpson on the part of the
// interval where the integrand is not negligible (it decays like exp(-d (alpha - t) cot alpha)).
double ratio_integral(double alpha, int d, int steps = 4000) {
  double sa = std::sin(alpha);
  double w = alpha;
  double ta = std::tan(alpha);
  if (std::isfinite(ta) && ta > 0) w = std::min(alpha, 60.0 * ta / std::max(1, d) + 1e-12);
  double lo = alpha - w;
  // steps is even.
  double h = w / steps;
  double log_sa = std::log(sa);
  auto f = [&](double t) {
    double s = std::sin(t);
    if (s <= 0) return 0.0;
    return std::exp(d * (std::log(s) - log_sa));
  };
  double acc = f(lo) + f(alpha);
  for (int i = 1; i < steps; ++i) acc += f(lo + i * h) * (i % 2 ? 4.0 : 2.0);
  return acc * h / 3.0;
}

}  // namespace

namespace {
double eta_exact_steps(double t, int d, int steps) {
  if (!(t > 0)) return 1.0;
  if (t >= 1.0) return kMaxEta;
  double alpha = std::acos(t);
  double r = ratio_integral(alpha, d, steps);
  if (!(r > 0)) return kMaxEta;
  double eta = 1.0 + std::cos(alpha) / (std::sin(alpha) * r);
  return std::min(eta, kMaxEta);
}
}  // namespace

double eta_exact(double t, int d) {
  if (!(t > 0)) return 1.0;
  if (t >= 1.0) return kMaxEta;
  double alpha = std::acos(t);
  double r = ratio_integral(alpha, d);
  if (!(r > 0)) return kMaxEta;
  double eta = 1.0 + std::cos(alpha) / (std::sin(alpha) * r);
  return std::min(eta, kMaxEta);
}

double eta_scann(double t, int d) {
  if (!(t > 0)) return 0.0;
  if (t >= 1.0) return kMaxEta;
  return std::min(kMaxEta, (d - 1) * t * t / (1.0 - t * t));
}

EtaFunction::EtaFunction(double threshold, double fixed_eta, bool scann_formula, int d)
    : threshold_(threshold), fixed_eta_(fixed_eta), scann_(scann_formula), plain_(false), d_(d) {
  if (fixed_eta_ > 0) {
    plain_ = fixed_eta_ == 1.0;
    return;
  }
  if (!(threshold_ > 0)) {
    plain_ = true;
    return;
  }
  unit_eta_ = scann_ ? eta_scann(threshold_, d_) : eta_exact(threshold_, d_);
}

void EtaFunction::build_grid() const {
  // h(t) = log(eta(t) - 1) - log(t) + log(1 - t) is smooth on (0, 1): eta - 1 ~ c t near 0
  // and ~ c' / (1 - t) near 1. Tabulate it on t_i = kGridMax * i / kGridSize, i >= 1.
  grid_.resize(kGridSize + 1);
  for (int i = 1; i <= kGridSize; ++i) {
    double t = kGridMax * i / kGridSize;
    double e = eta_exact_steps(t, d_, 1000);
    grid_[i] = std::log(std::max(e - 1.0, 1e-300)) - std::log(t) + std::log1p(-t);
  }
  grid_[0] = 2 * grid_[1] - grid_[2];
}

double EtaFunction::operator()(double norm) const {
  if (fixed_eta_ > 0) return fixed_eta_;
  if (plain_ || !(norm > 0)) return 1.0;
  if (norm == 1.0) return unit_eta_;
  double t = threshold_ / norm;
  if (scann_) return eta_scann(t, d_);
  std::call_once(grid_once_, [this] { build_grid(); });
  if (t >= kGridMax) return eta_exact(t, d_);
  double pos = t / kGridMax * kGridSize;
  int i = static_cast<int>(pos);
  if (i >= kGridSize) i = kGridSize - 1;
  double frac = pos - i;
  double h = grid_[i] * (1 - frac) + grid_[i + 1] * frac;
  double e = 1.0 + std::exp(h + std::log(t) - std::log1p(-t));
  return std::min(e, kMaxEta);
}

BlockLayout::BlockLayout(size_t d_, size_t dpb) : d(d_), dims_per_block(dpb) {
  if (d == 0) throw InvalidArgument("dimension must be positive");
  if (dpb < 1 || dpb > limits::kMaxDimsPerBlock)
    throw InvalidArgument("dims_per_block must be between 1 and " + std::to_string(limits::kMaxDimsPerBlock));
  num_blocks = (d + dpb - 1) / dpb;
  // The scan sums one 8-bit table entry per block in 16-bit lanes: the table scale leaves
  // (65535 - num_blocks) / num_blocks levels per block on average, so cap the block count.
  if (num_blocks > kMaxBlocks)
    throw InvalidArgument("d / dims_per_block gives " + std::to_string(num_blocks) + " blocks; at most " +
                          std::to_string(kMaxBlocks) + " are supported (raise dims_per_block)");
  num_blocks_pad = std::max<size_t>(2, num_blocks + (num_blocks % 2));
  for (size_t m = 0; m < num_blocks; ++m) {
    offset.push_back(static_cast<uint32_t>(m * dpb));
    dims.push_back(static_cast<uint32_t>(std::min(dpb, d - m * dpb)));
  }
}

void transpose_codebook(const BlockLayout& L, const float* cb, float* cbt) {
  const int K = kCentersPerBlock;
  for (size_t m = 0; m < L.num_blocks; ++m) {
    const size_t off = L.offset[m], dm = L.dims[m];
    for (int c = 0; c < K; ++c)
      for (size_t j = 0; j < dm; ++j) cbt[K * off + j * K + c] = cb[K * off + c * dm + j];
  }
}

double encode_anisotropic(const float* r, const float* u, double eta, const BlockLayout& L, const float* cbt,
                          uint8_t* codes, EncodeScratch& sc, int max_rounds) {
  const size_t M = L.num_blocks;
  constexpr int K = kCentersPerBlock;
  const bool aniso = u != nullptr && eta != 1.0;
  sc.norm2.resize(M * K);
  if (aniso) sc.par.resize(M * K);
  double total = 0, s = 0;
  for (size_t m = 0; m < M; ++m) {
    const size_t off = L.offset[m], dm = L.dims[m];
    const float* C = cbt + size_t(K) * off;  // (dm, 16)
    float* n2 = sc.norm2.data() + m * K;
    float acc[K] = {0.f}, par[K] = {0.f};
    // 16 centres at once (vectorised at the baseline ISA; the same code at every SIMD level).
    for (size_t j = 0; j < dm; ++j) {
      const float rj = r[off + j];
      const float* Cj = C + j * K;
      for (int k = 0; k < K; ++k) {
        float e = rj - Cj[k];
        acc[k] += e * e;
      }
      if (aniso) {
        const float uj = u[off + j];
        for (int k = 0; k < K; ++k) par[k] += uj * (rj - Cj[k]);
      }
    }
    // Branch-free argmin (the winner is unpredictable): the values are >= 0, so their bit
    // patterns order like them; the low word breaks ties towards the lower index.
    uint64_t key = UINT64_MAX;
    for (int k = 0; k < K; ++k) {
      n2[k] = acc[k];
      uint32_t bits;
      std::memcpy(&bits, &acc[k], 4);
      const uint64_t kk = (uint64_t(bits) << 32) | uint32_t(k);
      key = kk < key ? kk : key;
    }
    const int best = static_cast<int>(uint32_t(key));
    if (aniso)
      for (int k = 0; k < K; ++k) sc.par[m * K + k] = par[k];
    codes[m] = static_cast<uint8_t>(best);
    total += n2[best];
    if (aniso) s += sc.par[m * K + best];
  }
  if (!aniso) return total;
  const double w = eta - 1.0;
  const float wf = static_cast<float>(w);
  for (int round = 0; round < max_rounds; ++round) {
    bool changed = false;
    for (size_t m = 0; m < M; ++m) {
      const float* n2 = sc.norm2.data() + m * K;
      const float* par = sc.par.data() + m * K;
      const int cur = codes[m];
      const float rest = static_cast<float>(s - par[cur]);
      float cost[K];
      for (int k = 0; k < K; ++k) {
        float v = rest + par[k];
        cost[k] = n2[k] + wf * (v * v);
      }
      // The smallest cost, keeping the current centre on ties, then the lowest index.
      uint64_t key = UINT64_MAX;
      for (int k = 0; k < K; ++k) {
        uint32_t bits;
        std::memcpy(&bits, &cost[k], 4);
        const uint64_t kk = (uint64_t(bits) << 32) | uint32_t(k == cur ? 0 : k + 1);
        key = kk < key ? kk : key;
      }
      const uint32_t low = uint32_t(key);
      const int best = low == 0 ? cur : int(low) - 1;
      if (best != cur) {
        changed = true;
        codes[m] = static_cast<uint8_t>(best);
        s = s - par[cur] + par[best];
      }
    }
    if (!changed) break;
  }
  double loss = 0;
  for (size_t m = 0; m < M; ++m) loss += sc.norm2[m * K + codes[m]];
  return loss + w * s * s;
}

namespace {

// Fixed chunking (independent of the thread count) for deterministic reductions.
constexpr size_t kReduceChunks = 32;

double encode_all(const float* R, const float* U, const double* eta, size_t n, const BlockLayout& L, const float* cb,
                  uint8_t* codes, int nthreads) {
  const size_t d = L.d, M = L.num_blocks;
  std::vector<float> cbt(L.codebook_size());
  transpose_codebook(L, cb, cbt.data());
  std::vector<double> chunk_loss(kReduceChunks, 0.0);
  size_t per = (n + kReduceChunks - 1) / kReduceChunks;
  parallel_for(kReduceChunks, nthreads, 1, [&](size_t cb_, size_t ce) {
    EncodeScratch sc;
    for (size_t c = cb_; c < ce; ++c) {
      size_t b = c * per, e = std::min(n, b + per);
      double acc = 0;
      for (size_t i = b; i < e; ++i)
        acc += encode_anisotropic(R + i * d, U ? U + i * d : nullptr, eta ? eta[i] : 1.0, L, cbt.data(), codes + i * M,
                                  sc);
      chunk_loss[c] = acc;
    }
  });
  double total = 0;
  for (double v : chunk_loss) total += v;
  return n ? total / double(n) : 0.0;
}

// Joint least-squares codebook update (paper's step (b); normal equations in the brief, Sec. 2,
// generalised to residuals: sum_i B_i^T W_i B_i c = sum_i B_i^T W_i r_i).
void update_codebooks(const float* R, const float* U, const double* eta, size_t n, const BlockLayout& L,
                      const uint8_t* codes, int cg_iterations, int nthreads, std::vector<float>& cb) {
  const size_t d = L.d, M = L.num_blocks, K = kCentersPerBlock;
  const size_t P = K * d;
  auto pos = [&](size_t m, size_t k, size_t j) { return K * L.offset[m] + k * L.dims[m] + j; };
  const size_t per = (n + kReduceChunks - 1) / kReduceChunks;

  // Reduction helper: each fixed chunk accumulates into its own buffer; buffers summed in order.
  std::vector<double> bufs(kReduceChunks * P);
  auto reduce = [&](const std::function<void(size_t, size_t, double*)>& body, std::vector<double>& out) {
    std::fill(bufs.begin(), bufs.end(), 0.0);
    parallel_for(kReduceChunks, nthreads, 1, [&](size_t cb_, size_t ce) {
      for (size_t c = cb_; c < ce; ++c) body(c * per, std::min(n, c * per + per), bufs.data() + c * P);
    });
    out.assign(P, 0.0);
    for (size_t c = 0; c < kReduceChunks; ++c)
      for (size_t p = 0; p < P; ++p) out[p] += bufs[c * P + p];
  };

  // Counts, diagonal, right-hand side.
  std::vector<double> count(M * K, 0.0);
  for (size_t i = 0; i < n; ++i)
    for (size_t m = 0; m < M; ++m) count[m * K + codes[i * M + m]] += 1.0;
  std::vector<double> diag, rhs;
  reduce(
      [&](size_t b, size_t e, double* out) {
        for (size_t i = b; i < e; ++i) {
          const double w = eta[i] - 1.0;
          const float* u = U + i * d;
          for (size_t m = 0; m < M; ++m) {
            size_t k = codes[i * M + m];
            for (size_t j = 0; j < L.dims[m]; ++j) {
              double uj = u[L.offset[m] + j];
              out[pos(m, k, j)] += w * uj * uj;
            }
          }
        }
      },
      diag);
  reduce(
      [&](size_t b, size_t e, double* out) {
        for (size_t i = b; i < e; ++i) {
          const double w = eta[i] - 1.0;
          const float* u = U + i * d;
          const float* r = R + i * d;
          double ur = 0;
          for (size_t t = 0; t < d; ++t) ur += double(u[t]) * r[t];
          for (size_t m = 0; m < M; ++m) {
            size_t k = codes[i * M + m];
            for (size_t j = 0; j < L.dims[m]; ++j) {
              size_t t = L.offset[m] + j;
              out[pos(m, k, j)] += r[t] + w * ur * u[t];
            }
          }
        }
      },
      rhs);
  std::vector<char> fixed(P, 0);
  double mean_diag = 0;
  for (size_t m = 0; m < M; ++m)
    for (size_t k = 0; k < K; ++k)
      for (size_t j = 0; j < L.dims[m]; ++j) {
        size_t p = pos(m, k, j);
        diag[p] += count[m * K + k];
        mean_diag += diag[p];
      }
  mean_diag /= double(P);
  const double ridge = 1e-9 * std::max(mean_diag, 1e-30);
  std::vector<double> x(P);
  for (size_t p = 0; p < P; ++p) x[p] = cb[p];
  for (size_t m = 0; m < M; ++m)
    for (size_t k = 0; k < K; ++k)
      if (count[m * K + k] == 0)
        for (size_t j = 0; j < L.dims[m]; ++j) {
          size_t p = pos(m, k, j);
          fixed[p] = 1;
          diag[p] = 1.0;
          rhs[p] = x[p];
        }
  for (size_t p = 0; p < P; ++p)
    if (!fixed[p]) diag[p] += ridge;

  auto apply = [&](const std::vector<double>& v, std::vector<double>& out) {
    reduce(
        [&](size_t b, size_t e, double* o) {
          for (size_t i = b; i < e; ++i) {
            const double w = eta[i] - 1.0;
            if (w == 0) continue;
            const float* u = U + i * d;
            double s = 0;
            for (size_t m = 0; m < M; ++m) {
              size_t k = codes[i * M + m];
              const double* vk = v.data() + pos(m, k, 0);
              const float* um = u + L.offset[m];
              for (size_t j = 0; j < L.dims[m]; ++j) s += um[j] * vk[j];
            }
            s *= w;
            for (size_t m = 0; m < M; ++m) {
              size_t k = codes[i * M + m];
              double* ok = o + pos(m, k, 0);
              const float* um = u + L.offset[m];
              for (size_t j = 0; j < L.dims[m]; ++j) ok[j] += s * um[j];
            }
          }
        },
        out);
    for (size_t m = 0; m < M; ++m)
      for (size_t k = 0; k < K; ++k)
        for (size_t j = 0; j < L.dims[m]; ++j) {
          size_t p = pos(m, k, j);
          out[p] += (fixed[p] ? 1.0 : count[m * K + k] + ridge) * v[p];
        }
  };

  // Jacobi-preconditioned conjugate gradients, warm-started at the current codebook.
  std::vector<double> Ax(P), r(P), z(P), p(P), Ap(P);
  apply(x, Ax);
  double bnorm = 0, rz = 0;
  for (size_t i = 0; i < P; ++i) {
    r[i] = rhs[i] - Ax[i];
    z[i] = r[i] / diag[i];
    p[i] = z[i];
    rz += r[i] * z[i];
    bnorm += rhs[i] * rhs[i];
  }
  bnorm = std::sqrt(bnorm);
  for (int it = 0; it < cg_iterations; ++it) {
    double rn = 0;
    for (size_t i = 0; i < P; ++i) rn += r[i] * r[i];
    if (std::sqrt(rn) <= 1e-7 * std::max(bnorm, 1e-300)) break;
    apply(p, Ap);
    double pAp = 0;
    for (size_t i = 0; i < P; ++i) pAp += p[i] * Ap[i];
    if (!(pAp > 0)) break;
    double alpha = rz / pAp;
    double rz_new = 0;
    for (size_t i = 0; i < P; ++i) {
      x[i] += alpha * p[i];
      r[i] -= alpha * Ap[i];
      z[i] = r[i] / diag[i];
      rz_new += r[i] * z[i];
    }
    double beta = rz_new / rz;
    rz = rz_new;
    for (size_t i = 0; i < P; ++i) p[i] = z[i] + beta * p[i];
  }
  for (size_t i = 0; i < P; ++i) cb[i] = static_cast<float>(x[i]);
}

}  // namespace

std::vector<float> train_codebooks(const float* R, const float* U, const double* eta, size_t n, const BlockLayout& L,
                                   const CodebookTrainOptions& opt, Monitor* mon, CodebookTrainStats* stats) {
  if (n == 0) throw InvalidArgument("no training vectors");
  const size_t d = L.d, M = L.num_blocks, K = kCentersPerBlock;
  std::vector<float> cb(L.codebook_size());
  // (0) k-means codebooks per block.
  // k-means runs on an evenly strided subset (the alternations below then use all n rows).
  const size_t nk = std::min(n, opt.kmeans_sample);
  std::vector<float> sub;
  for (size_t m = 0; m < M; ++m) {
    check_stop(mon);
    const size_t off = L.offset[m], dm = L.dims[m];
    sub.resize(nk * dm);
    for (size_t i = 0; i < nk; ++i) std::memcpy(sub.data() + i * dm, R + (i * n / nk) * d + off, dm * sizeof(float));
    KMeansOptions ko;
    ko.k = K;
    ko.iterations = opt.kmeans_iterations;
    ko.kmeanspp = true;
    ko.seed = opt.seed * 1000003ULL + m;
    ko.nthreads = opt.nthreads;
    ko.stage = "pq k-means";
    std::vector<float> c = train_kmeans(sub.data(), nk, dm, ko, nullptr);
    std::memcpy(cb.data() + K * off, c.data(), K * dm * sizeof(float));
    if (mon) mon->progress("pq k-means", m + 1, M, "");
  }
  const bool aniso = U != nullptr && eta != nullptr;
  std::vector<uint8_t> codes(n * M);
  std::vector<double> ones;
  const double* w = eta;
  if (!aniso) {
    ones.assign(n, 1.0);
    w = ones.data();
  }
  // (a)/(b) alternations.
  for (int it = 0; it <= opt.avq_iterations; ++it) {
    check_stop(mon);
    double loss = encode_all(R, aniso ? U : nullptr, w, n, L, cb.data(), codes.data(), opt.nthreads);
    if (stats) stats->loss.push_back(loss);
    if (mon) mon->progress("avq", it, opt.avq_iterations, "mean loss " + std::to_string(loss));
    if (it == opt.avq_iterations) break;
    if (aniso) {
      update_codebooks(R, U, w, n, L, codes.data(), opt.cg_iterations, opt.nthreads, cb);
    } else {
      // eta == 1: the least-squares update is the per-codeword mean (Lloyd step).
      std::vector<double> sums(cb.size(), 0.0), cnt(M * K, 0.0);
      for (size_t i = 0; i < n; ++i)
        for (size_t m = 0; m < M; ++m) {
          size_t k = codes[i * M + m];
          cnt[m * K + k] += 1;
          for (size_t j = 0; j < L.dims[m]; ++j)
            sums[K * L.offset[m] + k * L.dims[m] + j] += R[i * d + L.offset[m] + j];
        }
      for (size_t m = 0; m < M; ++m)
        for (size_t k = 0; k < K; ++k)
          if (cnt[m * K + k] > 0)
            for (size_t j = 0; j < L.dims[m]; ++j) {
              size_t p = K * L.offset[m] + k * L.dims[m] + j;
              cb[p] = static_cast<float>(sums[p] / cnt[m * K + k]);
            }
    }
  }
  return cb;
}

}  // namespace avq
