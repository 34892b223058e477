#include "kmeans.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>

#include "kernels/kernels.h"

namespace avq {

namespace {

// Few-dimensional distances (PQ blocks, d <= 8) are inlined: the same code at every SIMD level.
inline float small_l2(const float* a, const float* b, size_t d) {
  float s = 0.f;
  for (size_t j = 0; j < d; ++j) {
    float t = a[j] - b[j];
    s += t * t;
  }
  return s;
}

}  // namespace

uint32_t argmax_first(const float* s, size_t k) {
  float m0 = s[0], m1 = s[0], m2 = s[0], m3 = s[0];
  size_t j = 1;
  for (; j + 4 <= k; j += 4) {
    m0 = s[j] > m0 ? s[j] : m0;
    m1 = s[j + 1] > m1 ? s[j + 1] : m1;
    m2 = s[j + 2] > m2 ? s[j + 2] : m2;
    m3 = s[j + 3] > m3 ? s[j + 3] : m3;
  }
  for (; j < k; ++j) m0 = s[j] > m0 ? s[j] : m0;
  m0 = m1 > m0 ? m1 : m0;
  m2 = m3 > m2 ? m3 : m2;
  m0 = m2 > m0 ? m2 : m0;
  size_t best = 0;
  for (; best + 8 <= k; best += 8) {  // 8 compares per branch (the maximum's place is random)
    const bool hit = (s[best] == m0) | (s[best + 1] == m0) | (s[best + 2] == m0) | (s[best + 3] == m0) |
                     (s[best + 4] == m0) | (s[best + 5] == m0) | (s[best + 6] == m0) | (s[best + 7] == m0);
    if (hit) break;
  }
  while (best + 1 < k && !(s[best] == m0)) ++best;
  return static_cast<uint32_t>(best);
}

namespace {

void assign_block(const float* x, size_t begin, size_t end, size_t d, const float* c, const CenterTable* ct, size_t k,
                  bool by_dot, uint32_t* out, float* out_score) {
  const size_t kp = ct->ngroups * 16;
  if (d <= 8 && !by_dot) {
    std::vector<float> scores(kp);
    for (size_t i = begin; i < end; ++i) {
      const float* xi = x + i * d;
      // Few dimensions (PQ blocks): all centres at once from the transposed table, vectorised at
      // the baseline ISA (the same code at every SIMD level).
      const float* T = ct->t.data();
      for (size_t j = 0; j < kp; ++j) scores[j] = 0.f;
      for (size_t g = 0; g < ct->ngroups; ++g)
        for (size_t t = 0; t < d; ++t) {
          const float xv = xi[t];
          const float* row = T + (g * d + t) * 16;
          float* sg = scores.data() + g * 16;
          for (int l = 0; l < 16; ++l) {
            float e = xv - row[l];
            sg[l] += e * e;
          }
        }
      // Branch-free argmin (the winner is unpredictable): squared distances are >= 0, so their
      // bit patterns order like the values; the low word breaks ties towards the lower index.
      uint64_t key = UINT64_MAX;
      for (size_t j = 0; j < k; ++j) {
        uint32_t bits;
        std::memcpy(&bits, &scores[j], 4);
        const uint64_t kj = (uint64_t(bits) << 32) | j;
        key = kj < key ? kj : key;
      }
      const uint32_t best = static_cast<uint32_t>(key);
      out[i] = best;
      if (out_score) out_score[i] = scores[best];
    }
    return;
  }
  (void)c;
  const size_t rows = score_rows(kp);
  std::vector<float> scores(rows * kp);
  for (size_t b = begin; b < end; b += rows) {
    const size_t nb = std::min(rows, end - b);
    ct->score_multi(x + b * d, nb, by_dot, scores.data());
    for (size_t r = 0; r < nb; ++r) {
      const size_t i = b + r;
      const float* si = scores.data() + r * kp;
      const uint32_t best = argmax_first(si, k);
      float best_s = si[best];
      if (!by_dot) {
        const float* xi = x + i * d;
        float n2 = 0.f;
        for (size_t t = 0; t < d; ++t) n2 += xi[t] * xi[t];
        best_s = std::max(0.f, n2 - best_s);
      }
      out[i] = best;
      if (out_score) out_score[i] = best_s;
    }
  }
}

void normalize_rows(float* c, size_t k, size_t d) {
  for (size_t j = 0; j < k; ++j) {
    double s = 0;
    for (size_t t = 0; t < d; ++t) s += double(c[j * d + t]) * c[j * d + t];
    if (s > 0) {
      double nrm = std::sqrt(s);
      for (size_t t = 0; t < d; ++t) c[j * d + t] = static_cast<float>(c[j * d + t] / nrm);
    }
  }
}

}  // namespace

void CenterTable::build(const float* c, size_t k_, size_t d_) {
  k = k_;
  d = d_;
  ngroups = (k + 15) / 16;
  t.assign(ngroups * 16 * d, 0.f);
  norm2.assign(ngroups * 16, 0.f);
  for (size_t i = 0; i < k; ++i) {
    size_t g = i / 16, l = i % 16;
    float n2 = 0.f;
    for (size_t j = 0; j < d; ++j) {
      t[(g * d + j) * 16 + l] = c[i * d + j];
      n2 += c[i * d + j] * c[i * d + j];
    }
    norm2[i] = n2;
  }
}

void CenterTable::score(const float* q, bool by_dot, float* out) const {
  kernels::active().dot_t16(q, t.data(), ngroups, d, out);
  if (!by_dot)
    for (size_t i = 0; i < ngroups * 16; ++i) out[i] = (out[i] + out[i]) - norm2[i];
}

void CenterTable::score_multi(const float* q, size_t nq, bool by_dot, float* out) const {
  const size_t kp = ngroups * 16;
  kernels::active().dot_t16_multi(q, nq, d, t.data(), ngroups, d, out, kp);
  if (!by_dot)
    for (size_t p = 0; p < nq; ++p) {
      float* o = out + p * kp;
      for (size_t i = 0; i < kp; ++i) o[i] = (o[i] + o[i]) - norm2[i];
    }
}

void CenterTable::build_coarse() {
  dp = (d + 1) / 2;
  const double limit = double(std::numeric_limits<int32_t>::max()) / (double(kCoarseCentreMax) * double(2 * dp));
  qmax = static_cast<int32_t>(std::min(32767.0, std::floor(limit)));
  ti.clear();
  if (qmax < 64) return;  // d beyond ~16k: too coarse to help
  ti.assign(ngroups * dp * 32, 0);
  scale.assign(ngroups * 16, 0.f);
  l1.assign(ngroups * 16, 0.f);
  err.assign(ngroups * 16, 0.f);
  for (size_t i = 0; i < k; ++i) {
    const size_t g = i / 16, l = i % 16;
    double mx = 0.0, s1 = 0.0;
    for (size_t j = 0; j < d; ++j) {
      const double v = t[(g * d + j) * 16 + l];
      mx = std::max(mx, std::fabs(v));
      s1 += std::fabs(v);
    }
    const double sc = static_cast<float>(mx / kCoarseCentreMax);  // the float the search uses
    double e = 0.0;
    for (size_t j = 0; j < d && sc > 0.0; ++j) {
      const double v = t[(g * d + j) * 16 + l];
      const double r = std::max(-double(kCoarseCentreMax), std::min(double(kCoarseCentreMax), std::nearbyint(v / sc)));
      ti[((g * dp + j / 2) * 16 + l) * 2 + j % 2] = static_cast<int16_t>(r);
      e = std::max(e, std::fabs(v - sc * r));
    }
    scale[i] = static_cast<float>(sc);
    l1[i] = static_cast<float>(s1 * (1.0 + 1e-6));  // upper bounds despite the rounding to float
    err[i] = static_cast<float>(e * (1.0 + 1e-6));
  }
}

size_t CenterTable::bytes() const {
  return (t.capacity() + norm2.capacity()) * sizeof(float) + ti.capacity() * sizeof(int16_t) +
         (scale.capacity() + l1.capacity() + err.capacity()) * sizeof(float);
}

void assign_centers(const float* x, size_t n, size_t d, const float* c, size_t k, bool by_dot, uint32_t* out,
                    float* out_score, int nthreads) {
  if (k == 0) throw InvalidArgument("assign_centers: no centers");
  CenterTable ct;
  ct.build(c, k, d);
  size_t chunk = std::max<size_t>(64, std::min<size_t>(4096, 2000000 / std::max<size_t>(1, k * d)));
  parallel_for(n, nthreads, chunk,
               [&](size_t b, size_t e) { assign_block(x, b, e, d, c, &ct, k, by_dot, out, out_score); });
}

std::vector<float> train_kmeans(const float* x, size_t n, size_t d, const KMeansOptions& opt, Monitor* mon,
                                std::vector<uint32_t>* assign_out) {
  const size_t k = opt.k;
  if (n == 0 || k == 0) throw InvalidArgument("k-means needs at least one point and one center");
  std::mt19937_64 rng(opt.seed * 0x9E3779B97F4A7C15ULL + 12345);
  std::vector<float> c(k * d);

  // Seeding.
  if (opt.kmeanspp && n > k) {
    std::vector<double> dmin(n, std::numeric_limits<double>::infinity());
    size_t first = std::uniform_int_distribution<size_t>(0, n - 1)(rng);
    std::memcpy(c.data(), x + first * d, d * sizeof(float));
    for (size_t j = 1; j < k; ++j) {
      const float* prev = c.data() + (j - 1) * d;
      double total = 0;
      for (size_t i = 0; i < n; ++i) {
        double dist = small_l2(x + i * d, prev, d);
        if (dist < dmin[i]) dmin[i] = dist;
        total += dmin[i];
      }
      size_t pick = 0;
      if (total > 0) {
        double r = std::uniform_real_distribution<double>(0, total)(rng);
        double acc = 0;
        pick = n - 1;
        for (size_t i = 0; i < n; ++i) {
          acc += dmin[i];
          if (acc >= r && dmin[i] > 0) {
            pick = i;
            break;
          }
        }
      } else {
        pick = std::uniform_int_distribution<size_t>(0, n - 1)(rng);
      }
      std::memcpy(c.data() + j * d, x + pick * d, d * sizeof(float));
    }
  } else {
    std::vector<size_t> perm(n);
    std::iota(perm.begin(), perm.end(), 0);
    for (size_t j = 0; j < k; ++j) {
      size_t src;
      if (j < n) {
        size_t r = j + std::uniform_int_distribution<size_t>(0, n - 1 - j)(rng);
        std::swap(perm[j], perm[r]);
        src = perm[j];
      } else {
        src = perm[j % n];
      }
      std::memcpy(c.data() + j * d, x + src * d, d * sizeof(float));
    }
  }
  if (opt.spherical) normalize_rows(c.data(), k, d);

  std::vector<uint32_t> assign(n, 0), prev(n, UINT32_MAX);
  std::vector<double> sums(k * d);
  std::vector<size_t> counts(k);
  for (int it = 0; it < std::max(1, opt.iterations); ++it) {
    check_stop(mon);
    assign_centers(x, n, d, c.data(), k, opt.spherical, assign.data(), nullptr, opt.nthreads);
    size_t changed = 0;
    for (size_t i = 0; i < n; ++i) changed += assign[i] != prev[i];
    prev = assign;
    if (mon) mon->progress(opt.stage, it + 1, opt.iterations, "changed " + std::to_string(changed));
    // Means, accumulated in double in row order (deterministic).
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (size_t i = 0; i < n; ++i) {
      double* s = sums.data() + size_t(assign[i]) * d;
      const float* xi = x + i * d;
      for (size_t t = 0; t < d; ++t) s[t] += xi[t];
      counts[assign[i]]++;
    }
    for (size_t j = 0; j < k; ++j) {
      if (counts[j] == 0) continue;
      for (size_t t = 0; t < d; ++t) c[j * d + t] = static_cast<float>(sums[j * d + t] / double(counts[j]));
    }
    // Empty clusters: split the currently largest cluster (ties: lowest index), as Faiss does,
    // seeding the empty one with that cluster's point farthest from its mean (so that distinct
    // points, e.g. of heavily duplicated data, get separated); when all its points sit on the
    // mean, by a small perturbation of the mean instead.
    bool split = false;
    std::vector<double> dist;  // each point's squared distance to its cluster's mean (lazily)
    for (size_t j = 0; j < k; ++j) {
      if (counts[j] != 0) continue;
      size_t big = static_cast<size_t>(std::max_element(counts.begin(), counts.end()) - counts.begin());
      if (counts[big] <= 1) break;
      if (dist.empty()) {
        dist.resize(n);
        for (size_t i = 0; i < n; ++i) {
          const float* xi = x + i * d;
          const float* ci = c.data() + size_t(assign[i]) * d;
          double s2 = 0;
          for (size_t t = 0; t < d; ++t) s2 += (double(xi[t]) - ci[t]) * (double(xi[t]) - ci[t]);
          dist[i] = s2;
        }
      }
      size_t far = n;
      double far_d = 0;
      for (size_t i = 0; i < n; ++i)
        if (assign[i] == big && dist[i] > far_d) {
          far_d = dist[i];
          far = i;
        }
      if (far < n) {
        std::memcpy(c.data() + j * d, x + far * d, d * sizeof(float));
        assign[far] = static_cast<uint32_t>(j);
        dist[far] = 0;
        counts[j] = 1;
        counts[big] -= 1;
      } else {
        for (size_t t = 0; t < d; ++t) {
          float v = c[big * d + t];
          float eps = (t % 2 == 0 ? 1.f : -1.f) * (std::fabs(v) + 1e-6f) / 1024.f;
          c[j * d + t] = v + eps;
          c[big * d + t] = v - eps;
        }
        counts[j] = counts[big] / 2;
        counts[big] -= counts[j];
      }
      split = true;
    }
    if (opt.spherical) normalize_rows(c.data(), k, d);
    // A split must be followed by an assignment and a mean update before converging, or its
    // perturbed centres stay in place of the means.
    if (changed == 0 && !split) break;
  }
  if (assign_out) {
    assign_out->resize(n);
    assign_centers(x, n, d, c.data(), k, opt.spherical, assign_out->data(), nullptr, opt.nthreads);
  }
  return c;
}

}  // namespace avq
