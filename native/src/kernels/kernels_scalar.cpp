// Portable reference implementation of every KernelTable entry (namespace avq::kernels::scalar).
//
// This file is the definition of the results every other SIMD level must reproduce bit for bit
// (see the determinism contract in kernels.h). It is compiled with the project's baseline flags
// (plain x86-64 / SSE2 on x86, whatever the platform default is elsewhere) and -ffp-contract=off,
// so every product and every sum below is rounded to float separately. The compiler may
// auto-vectorise the 16-lane loops; that never changes the order of the float operations.
//
// Float reductions follow the canonical 16-lane order:
//   acc[i % 16] += term(i) for i = 0 .. d-1, then acc[j] += acc[j + s] for s = 8, 4, 2, 1.

#include "kernels/kernels.h"

#include <algorithm>
#include <cstring>

namespace avq {
namespace kernels {

const char* level_name(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar:
      return "scalar";
    case SimdLevel::kAvx2:
      return "avx2";
    case SimdLevel::kAvx512:
      return "avx512";
  }
  return "unknown";
}

namespace scalar {
namespace {

// Canonical pairwise fold of the 16 lane sums: s = 8, 4, 2, 1; result in acc[0].
inline float fold16(float* acc) {
  for (int s = 8; s >= 1; s >>= 1) {
    for (int j = 0; j < s; ++j) acc[j] += acc[j + s];
  }
  return acc[0];
}

// term(i) = a[i] * b[i]
struct DotTerm {
  static inline float term(float a, float b) { return a * b; }
};
// term(i) = t * t with t = a[i] - b[i]
struct L2Term {
  static inline float term(float a, float b) {
    const float t = a - b;
    return t * t;
  }
};

// Canonical 16-lane reduction of term(a[i], b[i]) over i < d.
template <class Term>
inline float reduce16(const float* a, const float* b, size_t d) {
  float acc[16] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += Term::term(a[i + j], b[i + j]);
  }
  // Tail: element i + j lands in lane (i + j) % 16 == j because i is a multiple of 16.
  for (size_t j = 0; i + j < d; ++j) acc[j] += Term::term(a[i + j], b[i + j]);
  return fold16(acc);
}

// Canonical 16-lane reduction of w[i] * float(x[i]) over i < d.
inline float reduce16_i8(const float* w, const int8_t* x, size_t d) {
  float acc[16] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += w[i + j] * static_cast<float>(x[i + j]);
  }
  for (size_t j = 0; i + j < d; ++j) acc[j] += w[i + j] * static_cast<float>(x[i + j]);
  return fold16(acc);
}

// IEEE binary16 -> float, exact (normal, subnormal, zero, inf and NaN halves).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
  uint32_t bits;
  if (e == 0x1Fu) {
    bits = sign | 0x7F800000u | (m << 13);
  } else if (e != 0) {
    bits = sign | ((e + 112u) << 23) | (m << 13);
  } else if (m == 0) {
    bits = sign;
  } else {  // subnormal half: m * 2^-24, a normal float
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    std::memcpy(&bits, &v, 4);
    bits |= sign;
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

// Canonical 16-lane reduction of q[i] * float(h[i]) over i < d.
inline float reduce16_f16(const float* q, const uint16_t* h, size_t d) {
  float acc[16] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    for (int j = 0; j < 16; ++j) acc[j] += q[i + j] * half_to_float(h[i + j]);
  }
  for (size_t j = 0; i + j < d; ++j) acc[j] += q[i + j] * half_to_float(h[i + j]);
  return fold16(acc);
}

float dot(const float* a, const float* b, size_t d) {
  return reduce16<DotTerm>(a, b, d);
}

float l2sqr(const float* a, const float* b, size_t d) {
  return reduce16<L2Term>(a, b, d);
}

void dot_batch(const float* q, const float* x, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = reduce16<DotTerm>(q, x + i * d, d);
}

void l2sqr_batch(const float* q, const float* x, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = reduce16<L2Term>(q, x + i * d, d);
}

void dot_gather(const float* q, const float* const* rows, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = reduce16<DotTerm>(q, rows[i], d);
}

void dot_i8_gather(const float* w, const int8_t* const* rows, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = reduce16_i8(w, rows[i], d);
}

void dot_f16_gather(const float* q, const uint16_t* const* rows, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) out[i] = reduce16_f16(q, rows[i], d);
}

// codes: (ngroups, nblocks_pad, 16) bytes. In group g, block m, byte j holds the code of point
// 32g+j in its low nibble and the code of point 32g+j+16 in its high nibble.
// lut: (nblocks_pad, 16). out: (ngroups * 32) uint16 in natural point order.
void scan_lut16(const uint8_t* codes, size_t ngroups, size_t nblocks_pad, const uint8_t* lut, uint16_t* out) {
  const size_t group_bytes = nblocks_pad * 16;
  for (size_t g = 0; g < ngroups; ++g) {
    const uint8_t* c = codes + g * group_bytes;
    uint32_t acc[32] = {0};
    for (size_t m = 0; m < nblocks_pad; ++m) {
      const uint8_t* cb = c + m * 16;
      const uint8_t* lm = lut + m * 16;
      for (int j = 0; j < 16; ++j) {
        acc[j] += lm[cb[j] & 0x0F];
        acc[j + 16] += lm[cb[j] >> 4];
      }
    }
    // The caller guarantees the sums fit; the cast matches the SIMD levels' 16-bit wrap-around.
    for (int p = 0; p < 32; ++p) out[g * 32 + p] = static_cast<uint16_t>(acc[p]);
  }
}

template <bool kHasBias>
inline size_t filter_impl(const uint16_t* acc, const float* bias, size_t n, float a, float b, float thr,
                          uint32_t* out_idx, float* out_score) {
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) {
    float s = static_cast<float>(acc[i]) * a;
    s = s + b;
    if (kHasBias) s = s + bias[i];
    if (s > thr) {
      out_idx[k] = static_cast<uint32_t>(i);
      out_score[k] = s;
      ++k;
    }
  }
  return k;
}

size_t filter_scores(const uint16_t* acc, const float* bias, size_t n, float a, float b, float thr, uint32_t* out_idx,
                     float* out_score) {
  if (bias != nullptr) return filter_impl<true>(acc, bias, n, a, b, thr, out_idx, out_score);
  return filter_impl<false>(acc, nullptr, n, a, b, thr, out_idx, out_score);
}

// Constant-initialised (no dynamic initialiser runs at load time).
void dot_t16(const float* q, const float* ct, size_t ngroups, size_t d, float* out) {
  for (size_t g = 0; g < ngroups; ++g) {
    float acc[16] = {0.f};
    const float* c = ct + g * d * 16;
    for (size_t j = 0; j < d; ++j) {
      const float qj = q[j];
      for (int l = 0; l < 16; ++l) acc[l] = acc[l] + qj * c[j * 16 + l];
    }
    for (int l = 0; l < 16; ++l) out[g * 16 + l] = acc[l];
  }
}

void dot_t16_multi(const float* q, size_t nq, size_t ldq, const float* ct, size_t ngroups, size_t d, float* out,
                   size_t ldo) {
  for (size_t p = 0; p < nq; ++p) dot_t16(q + p * ldq, ct, ngroups, d, out + p * ldo);
}

void dot_t16_i16(const int16_t* q, const int16_t* ct, size_t ngroups, size_t dp, int32_t* out) {
  for (size_t g = 0; g < ngroups; ++g) {
    int32_t acc[16] = {0};
    const int16_t* c = ct + g * dp * 32;
    for (size_t i = 0; i < dp; ++i)
      for (int l = 0; l < 16; ++l)
        acc[l] += int32_t(q[2 * i]) * c[(i * 16 + l) * 2] + int32_t(q[2 * i + 1]) * c[(i * 16 + l) * 2 + 1];
    for (int l = 0; l < 16; ++l) out[g * 16 + l] = acc[l];
  }
}

void dot_seq_gather(const float* q, const float* const* rows, size_t n, size_t d, float* out) {
  for (size_t i = 0; i < n; ++i) {
    float acc = 0.f;
    for (size_t j = 0; j < d; ++j) acc = acc + q[j] * rows[i][j];
    out[i] = acc;
  }
}

void partition_f32(const float* src, size_t n, float pivot, float* gt_out, float* lt_out, size_t* n_gt, size_t* n_lt) {
  size_t g = 0, l = 0;
  for (size_t i = 0; i < n; ++i) {
    const float v = src[i];
    gt_out[g] = v;
    g += v > pivot;
    lt_out[l] = v;
    l += v < pivot;
  }
  *n_gt = g;
  *n_lt = l;
}

void lut_blocks(const float* q, const float* ct, size_t d, size_t dpb, float* lut, float* mn, float* mx) {
  for (size_t m = 0, o = 0; o < d; ++m, o += dpb) {
    const size_t dm = std::min(dpb, d - o);
    float t[16] = {0.f};
    for (size_t j = 0; j < dm; ++j) {
      const float qj = q[o + j];
      for (int c = 0; c < 16; ++c) t[c] = t[c] + qj * ct[(o + j) * 16 + c];
    }
    float lo = t[0], hi = t[0];
    for (int c = 1; c < 16; ++c) {
      lo = std::min(lo, t[c]);
      hi = std::max(hi, t[c]);
    }
    for (int c = 0; c < 16; ++c) lut[m * 16 + c] = t[c] - lo;
    mn[m] = lo;
    mx[m] = hi;
  }
}

void lut_quantize(const float* lut, size_t n, float s, uint8_t* lut8) {
  for (size_t i = 0; i < n; ++i) {
    float v = lut[i] * s;
    v = v + 0.5f;
    v = v < 255.f ? v : 255.f;
    lut8[i] = static_cast<uint8_t>(static_cast<int>(v));
  }
}

constexpr KernelTable kTable = {
    SimdLevel::kScalar, &dot,           &l2sqr,         &dot_batch,    &l2sqr_batch,    &dot_gather,
    &dot_i8_gather,     &scan_lut16,    &filter_scores, &dot_t16,      &dot_t16_multi,  &dot_t16_i16,
    &dot_seq_gather,    &partition_f32, &lut_blocks,    &lut_quantize, &dot_f16_gather,
};

}  // namespace

const KernelTable& table() {
  return kTable;
}

}  // namespace scalar
}  // namespace kernels
}  // namespace avq
