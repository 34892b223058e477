// AVX-512 implementation of the KernelTable (namespace avq::kernels::avx512).
//
// Compiled with -mavx2 -mfma -mbmi -mbmi2 -mavx512f -mavx512bw -mavx512vl -mavx512dq (and the
// project-wide -ffp-contract=off); only ever called after cpu_has_avx512() said yes. Results are
// bit-identical to kernels_scalar.cpp:
//  * Float reductions keep the canonical 16 lanes in one __m512 accumulator, use separate
//    _mm512_mul_ps / _mm512_add_ps (never FMA), zero-fill the tail with masked loads (adding
//    +0.0f to a lane sum that started at +0.0f never changes it), and fold 8, 4, 2, 1 exactly like
//    the scalar code (s = 8 adds the two 256-bit halves).
//    This relies on -ffp-contract=off: GCC implements _mm512_mul_ps / _mm512_add_ps as plain vector
//    operators and would otherwise be free to fuse them into an FMA.
//  * The LUT16 scan is exact integer arithmetic.
//
// ODR note: as in kernels_avx2.cpp, nothing here may be an inline function or template that other
// TUs could instantiate too; helpers are intrinsics or have internal linkage, and the table is
// constant-initialised, so no AVX-512 code runs at load time.

#include "kernels/kernels.h"

#if defined(AVQ_HAVE_X86_KERNELS)

// GCC 12's AVX-512 intrinsic headers trip false -W(maybe-)uninitialized warnings at -O3 (they
// seed results with deliberately undefined vectors, GCC PR 105593); silence them for this TU only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <cstring>

namespace avq {
namespace kernels {
namespace avx512 {
namespace {

// Mask with the first k lanes / bytes set (k < 16 / k < 64 respectively; k == 0 gives 0).
inline __mmask16 first_mask16(size_t k) {
  return static_cast<__mmask16>((1u << k) - 1u);
}

// Canonical fold of the 16 lane sums: s = 8 (two 256-bit halves), 4, 2, 1.
inline float fold16(__m512 acc) {
  const __m256 v = _mm256_add_ps(_mm512_castps512_ps256(acc), _mm512_extractf32x8_ps(acc, 1));
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 0x1));
  return _mm_cvtss_f32(x);
}

// term(i) = a[i] * b[i]
struct DotTerm {
  static inline __m512 term(__m512 a, __m512 b) { return _mm512_mul_ps(a, b); }
};
// term(i) = t * t with t = a[i] - b[i]
struct L2Term {
  static inline __m512 term(__m512 a, __m512 b) {
    const __m512 t = _mm512_sub_ps(a, b);
    return _mm512_mul_ps(t, t);
  }
};

// R rows at once against the same query; each row has its own canonical 16-lane accumulator.
template <class Term, int R>
inline void rows_f32(const float* q, const float* const* rows, size_t d, float* out) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m512 qv = _mm512_loadu_ps(q + i);
    for (int r = 0; r < R; ++r) {
      acc[r] = _mm512_add_ps(acc[r], Term::term(qv, _mm512_loadu_ps(rows[r] + i)));
    }
  }
  if (i < d) {
    const __mmask16 m = first_mask16(d - i);
    const __m512 qv = _mm512_maskz_loadu_ps(m, q + i);
    for (int r = 0; r < R; ++r) {
      acc[r] = _mm512_add_ps(acc[r], Term::term(qv, _mm512_maskz_loadu_ps(m, rows[r] + i)));
    }
  }
  for (int r = 0; r < R; ++r) out[r] = fold16(acc[r]);
}

template <class Term>
inline void batch_f32(const float* q, const float* x, size_t n, size_t d, float* out) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const float* rows[4] = {x + i * d, x + (i + 1) * d, x + (i + 2) * d, x + (i + 3) * d};
    rows_f32<Term, 4>(q, rows, d, out + i);
  }
  for (; i < n; ++i) {
    const float* row = x + i * d;
    rows_f32<Term, 1>(q, &row, d, out + i);
  }
}

float dot(const float* a, const float* b, size_t d) {
  float r;
  rows_f32<DotTerm, 1>(a, &b, d, &r);
  return r;
}

float l2sqr(const float* a, const float* b, size_t d) {
  float r;
  rows_f32<L2Term, 1>(a, &b, d, &r);
  return r;
}

void dot_batch(const float* q, const float* x, size_t n, size_t d, float* out) {
  batch_f32<DotTerm>(q, x, n, d, out);
}

void l2sqr_batch(const float* q, const float* x, size_t n, size_t d, float* out) {
  batch_f32<L2Term>(q, x, n, d, out);
}

void dot_gather(const float* q, const float* const* rows, size_t n, size_t d, float* out) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) rows_f32<DotTerm, 4>(q, rows + i, d, out + i);
  for (; i < n; ++i) rows_f32<DotTerm, 1>(q, rows + i, d, out + i);
}

// Row loaders of rows_cvt: 16 values of a row as exact floats, and a masked tail (zeros beyond
// the mask, nothing read there).
struct I8Rows {  // int8 rows (int8 reordering)
  using T = int8_t;
  static __m512 load16(const int8_t* p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
  }
  static __m512 load_tail(const int8_t* p, __mmask16 m) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(m, p)));
  }
};
struct F16Rows {  // IEEE binary16 rows (float16 reordering; exact conversions)
  using T = uint16_t;
  static __m512 load16(const uint16_t* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static __m512 load_tail(const uint16_t* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
};

// R rows of L's type at once: acc[i % 16] += w[i] * float(row[i]), canonical order.
template <class L, int R>
inline void rows_cvt(const float* w, const typename L::T* const* rows, size_t d, float* out) {
  __m512 acc[R];
  for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m512 wv = _mm512_loadu_ps(w + i);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(wv, L::load16(rows[r] + i)));
  }
  if (i < d) {
    const __mmask16 m = first_mask16(d - i);
    const __m512 wv = _mm512_maskz_loadu_ps(m, w + i);
    for (int r = 0; r < R; ++r) acc[r] = _mm512_add_ps(acc[r], _mm512_mul_ps(wv, L::load_tail(rows[r] + i, m)));
  }
  for (int r = 0; r < R; ++r) out[r] = fold16(acc[r]);
}

template <class L>
void gather_cvt(const float* w, const typename L::T* const* rows, size_t n, size_t d, float* out) {
  size_t i = 0;
  for (; i + 4 <= n; i += 4) rows_cvt<L, 4>(w, rows + i, d, out + i);
  for (; i < n; ++i) rows_cvt<L, 1>(w, rows + i, d, out + i);
}

void dot_i8_gather(const float* w, const int8_t* const* rows, size_t n, size_t d, float* out) {
  gather_cvt<I8Rows>(w, rows, n, d, out);
}

void dot_f16_gather(const float* q, const uint16_t* const* rows, size_t n, size_t d, float* out) {
  gather_cvt<F16Rows>(q, rows, n, d, out);
}

// LUT16 scan; layouts as in kernels.h (codes (ngroups, nblocks_pad, 16) bytes, lut
// (nblocks_pad, 16) uint8, out (ngroups * 32) uint16 in natural point order).
//
// One step handles blocks m..m+3: a 512-bit load of 64 contiguous code bytes puts block m+t in
// 128-bit lane t, the 64 contiguous LUT bytes line up the same way, and vpshufb looks up within
// each lane (one shuffle for the low nibbles = points 0..15, one for the high = points 16..31).
// When nblocks_pad % 4 == 2 the last two blocks are one 256-bit step (the AVX2 step), added to
// the 512-bit accumulators once they have been folded to 256 bits. Compared with a 64-byte masked
// load of 32 bytes this does half the work for that step (measured faster on Zen 4) and gives the
// same sums, since the zero-filled half of a masked step would only ever add 0.
//
// Widening to uint16 (see kernels_avx2.cpp for the full argument): per nibble half,
//   odd += v >> 8 (odd bytes, exact), all += v (even + 256 * odd, modulo 2^16),
// and even = all - (odd << 8) modulo 2^16 at the end of the group, which is exact because the
// caller guarantees every sum is <= 65535. At the end of the group the four 128-bit lanes are
// summed (512 -> 256 -> 128), even is recovered, and even/odd are interleaved into point order.
// No per-block branches; the group's accumulators stay in registers.
void scan_lut16(const uint8_t* codes, size_t ngroups, size_t nblocks_pad, const uint8_t* lut, uint16_t* out) {
  const __m512i nib = _mm512_set1_epi8(0x0F);
  const __m256i nib256 = _mm256_set1_epi8(0x0F);
  const size_t group_bytes = nblocks_pad * 16;
  const size_t full_bytes = group_bytes & ~static_cast<size_t>(63);  // whole 4-block steps
  const bool has_pair = full_bytes != group_bytes;                   // 2 blocks left over
  const __m256i lut_pair =
      has_pair ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut + full_bytes)) : _mm256_setzero_si256();
  for (size_t g = 0; g < ngroups; ++g) {
    const uint8_t* c = codes + g * group_bytes;
    __m512i lo_all = _mm512_setzero_si512();  // points 0..15, even + 256 * odd (mod 2^16)
    __m512i lo_odd = _mm512_setzero_si512();  // points 0..15, odd bytes
    __m512i hi_all = _mm512_setzero_si512();  // points 16..31
    __m512i hi_odd = _mm512_setzero_si512();
    for (size_t off = 0; off < full_bytes; off += 64) {
      const __m512i cv = _mm512_loadu_si512(c + off);
      const __m512i lv = _mm512_loadu_si512(lut + off);
      const __m512i vlo = _mm512_shuffle_epi8(lv, _mm512_and_si512(cv, nib));
      const __m512i vhi = _mm512_shuffle_epi8(lv, _mm512_and_si512(_mm512_srli_epi16(cv, 4), nib));
      lo_all = _mm512_add_epi16(lo_all, vlo);
      lo_odd = _mm512_add_epi16(lo_odd, _mm512_srli_epi16(vlo, 8));
      hi_all = _mm512_add_epi16(hi_all, vhi);
      hi_odd = _mm512_add_epi16(hi_odd, _mm512_srli_epi16(vhi, 8));
    }
    // 512 -> 256: add the two 256-bit halves.
    __m256i lo_all2 = _mm256_add_epi16(_mm512_castsi512_si256(lo_all), _mm512_extracti64x4_epi64(lo_all, 1));
    __m256i lo_odd2 = _mm256_add_epi16(_mm512_castsi512_si256(lo_odd), _mm512_extracti64x4_epi64(lo_odd, 1));
    __m256i hi_all2 = _mm256_add_epi16(_mm512_castsi512_si256(hi_all), _mm512_extracti64x4_epi64(hi_all, 1));
    __m256i hi_odd2 = _mm256_add_epi16(_mm512_castsi512_si256(hi_odd), _mm512_extracti64x4_epi64(hi_odd, 1));
    if (has_pair) {  // same value for every group: perfectly predicted
      const __m256i cv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + full_bytes));
      const __m256i vlo = _mm256_shuffle_epi8(lut_pair, _mm256_and_si256(cv, nib256));
      const __m256i vhi = _mm256_shuffle_epi8(lut_pair, _mm256_and_si256(_mm256_srli_epi16(cv, 4), nib256));
      lo_all2 = _mm256_add_epi16(lo_all2, vlo);
      lo_odd2 = _mm256_add_epi16(lo_odd2, _mm256_srli_epi16(vlo, 8));
      hi_all2 = _mm256_add_epi16(hi_all2, vhi);
      hi_odd2 = _mm256_add_epi16(hi_odd2, _mm256_srli_epi16(vhi, 8));
    }
    // 256 -> 128, recover the even sums, interleave into point order.
    __m128i all = _mm_add_epi16(_mm256_castsi256_si128(lo_all2), _mm256_extracti128_si256(lo_all2, 1));
    __m128i odd = _mm_add_epi16(_mm256_castsi256_si128(lo_odd2), _mm256_extracti128_si256(lo_odd2, 1));
    __m128i even = _mm_sub_epi16(all, _mm_slli_epi16(odd, 8));
    __m128i* o = reinterpret_cast<__m128i*>(out + g * 32);
    _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(even, odd));  // points 0..7
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(even, odd));  // points 8..15
    all = _mm_add_epi16(_mm256_castsi256_si128(hi_all2), _mm256_extracti128_si256(hi_all2, 1));
    odd = _mm_add_epi16(_mm256_castsi256_si128(hi_odd2), _mm256_extracti128_si256(hi_odd2, 1));
    even = _mm_sub_epi16(all, _mm_slli_epi16(odd, 8));
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(even, odd));  // points 16..23
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(even, odd));  // points 24..31
  }
}

// s = float(acc[i]) * a + b (+ bias[i]), separately rounded; append i where s > thr.
// 16 points per step with a mask compare, branch-free: matching lanes (scores, and i + lane as
// indices) are left-packed in register with vcompress (the register form is fast everywhere,
// unlike the memory form on AMD Zen 4) and stored as full 16-lane vectors at position count,
// which then advances by popcount(mask). Those stores stay inside the n-entry outputs (count <= i,
// i + 16 <= n) but may leave unspecified values in entries >= the returned count. The tail
// (< 16 points) uses masked loads, a masked compare and a masked store of exactly the matches.
template <bool kHasBias>
inline size_t filter_impl(const uint16_t* acc, const float* bias, size_t n, float a, float b, float thr,
                          uint32_t* out_idx, float* out_score) {
  const __m512 va = _mm512_set1_ps(a);
  const __m512 vb = _mm512_set1_ps(b);
  const __m512 vthr = _mm512_set1_ps(thr);
  const __m512i iota = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  size_t k = 0;
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i a16 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i));
    __m512 s = _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(a16));
    s = _mm512_mul_ps(s, va);
    s = _mm512_add_ps(s, vb);
    if (kHasBias) s = _mm512_add_ps(s, _mm512_loadu_ps(bias + i));
    const __mmask16 m = _mm512_cmp_ps_mask(s, vthr, _CMP_GT_OQ);
    const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(i)), iota);
    // Full 16-lane stores: k <= i and i + 16 <= n, so they stay inside the n-entry outputs.
    _mm512_storeu_si512(out_idx + k, _mm512_maskz_compress_epi32(m, idx));
    _mm512_storeu_ps(out_score + k, _mm512_maskz_compress_ps(m, s));
    k += static_cast<unsigned>(__builtin_popcount(m));
  }
  if (i < n) {  // tail of 1..15 points: same arithmetic on masked lanes
    const __mmask16 tm = first_mask16(n - i);
    const __m256i a16 = _mm256_maskz_loadu_epi16(tm, acc + i);
    __m512 s = _mm512_cvtepi32_ps(_mm512_cvtepu16_epi32(a16));
    s = _mm512_mul_ps(s, va);
    s = _mm512_add_ps(s, vb);
    if (kHasBias) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(tm, bias + i));
    const __mmask16 m = _mm512_mask_cmp_ps_mask(tm, s, vthr, _CMP_GT_OQ);
    if (m != 0) {
      const unsigned cnt = static_cast<unsigned>(__builtin_popcount(m));
      const __mmask16 st = first_mask16(cnt);
      const __m512i idx = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(i)), iota);
      _mm512_mask_storeu_epi32(out_idx + k, st, _mm512_maskz_compress_epi32(m, idx));
      _mm512_mask_storeu_ps(out_score + k, st, _mm512_maskz_compress_ps(m, s));
      k += cnt;
    }
  }
  return k;
}

size_t filter_scores(const uint16_t* acc, const float* bias, size_t n, float a, float b, float thr, uint32_t* out_idx,
                     float* out_score) {
  if (bias != nullptr) return filter_impl<true>(acc, bias, n, a, b, thr, out_idx, out_score);
  return filter_impl<false>(acc, nullptr, n, a, b, thr, out_idx, out_score);
}

// Constant-initialised (no dynamic initialiser, hence no AVX-512 code at load time).
// Four groups (four 16-lane accumulators) per pass to hide the add latency.
void dot_t16(const float* q, const float* ct, size_t ngroups, size_t d, float* out) {
  size_t g = 0;
  const size_t gs = d * 16;
  for (; g + 4 <= ngroups; g += 4) {
    const float* c = ct + g * gs;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), a2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps();
    for (size_t j = 0; j < d; ++j) {
      const __m512 qj = _mm512_set1_ps(q[j]);
      a0 = _mm512_add_ps(a0, _mm512_mul_ps(qj, _mm512_loadu_ps(c + j * 16)));
      a1 = _mm512_add_ps(a1, _mm512_mul_ps(qj, _mm512_loadu_ps(c + gs + j * 16)));
      a2 = _mm512_add_ps(a2, _mm512_mul_ps(qj, _mm512_loadu_ps(c + 2 * gs + j * 16)));
      a3 = _mm512_add_ps(a3, _mm512_mul_ps(qj, _mm512_loadu_ps(c + 3 * gs + j * 16)));
    }
    _mm512_storeu_ps(out + g * 16, a0);
    _mm512_storeu_ps(out + g * 16 + 16, a1);
    _mm512_storeu_ps(out + g * 16 + 32, a2);
    _mm512_storeu_ps(out + g * 16 + 48, a3);
  }
  for (; g < ngroups; ++g) {
    const float* c = ct + g * gs;
    __m512 a0 = _mm512_setzero_ps();
    for (size_t j = 0; j < d; ++j)
      a0 = _mm512_add_ps(a0, _mm512_mul_ps(_mm512_set1_ps(q[j]), _mm512_loadu_ps(c + j * 16)));
    _mm512_storeu_ps(out + g * 16, a0);
  }
}

// Four queries x two groups of 16 centres per pass (8 accumulators), so each centre row is loaded
// once per 4 queries; per output the same sequential sum as dot_t16.
void dot_t16_multi(const float* q, size_t nq, size_t ldq, const float* ct, size_t ngroups, size_t d, float* out,
                   size_t ldo) {
  const size_t gs = d * 16;
  size_t p = 0;
  for (; p + 4 <= nq; p += 4) {
    const float* q0 = q + p * ldq;
    const float* q1 = q0 + ldq;
    const float* q2 = q1 + ldq;
    const float* q3 = q2 + ldq;
    size_t g = 0;
    for (; g + 2 <= ngroups; g += 2) {
      const float* c = ct + g * gs;
      __m512 a0 = _mm512_setzero_ps(), b0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();
      __m512 a2 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps(), a3 = _mm512_setzero_ps(), b3 = _mm512_setzero_ps();
      for (size_t j = 0; j < d; ++j) {
        const __m512 x = _mm512_loadu_ps(c + j * 16), y = _mm512_loadu_ps(c + gs + j * 16);
        __m512 v = _mm512_set1_ps(q0[j]);
        a0 = _mm512_add_ps(a0, _mm512_mul_ps(v, x));
        b0 = _mm512_add_ps(b0, _mm512_mul_ps(v, y));
        v = _mm512_set1_ps(q1[j]);
        a1 = _mm512_add_ps(a1, _mm512_mul_ps(v, x));
        b1 = _mm512_add_ps(b1, _mm512_mul_ps(v, y));
        v = _mm512_set1_ps(q2[j]);
        a2 = _mm512_add_ps(a2, _mm512_mul_ps(v, x));
        b2 = _mm512_add_ps(b2, _mm512_mul_ps(v, y));
        v = _mm512_set1_ps(q3[j]);
        a3 = _mm512_add_ps(a3, _mm512_mul_ps(v, x));
        b3 = _mm512_add_ps(b3, _mm512_mul_ps(v, y));
      }
      float* o = out + p * ldo + g * 16;
      _mm512_storeu_ps(o, a0);
      _mm512_storeu_ps(o + 16, b0);
      _mm512_storeu_ps(o + ldo, a1);
      _mm512_storeu_ps(o + ldo + 16, b1);
      _mm512_storeu_ps(o + 2 * ldo, a2);
      _mm512_storeu_ps(o + 2 * ldo + 16, b2);
      _mm512_storeu_ps(o + 3 * ldo, a3);
      _mm512_storeu_ps(o + 3 * ldo + 16, b3);
    }
    for (; g < ngroups; ++g)
      for (size_t r = 0; r < 4; ++r) dot_t16(q + (p + r) * ldq, ct + g * gs, 1, d, out + (p + r) * ldo + g * 16);
  }
  for (; p < nq; ++p) dot_t16(q + p * ldq, ct, ngroups, d, out + p * ldo);
}

#include "kernels/leaf_select_ymm.h"  // dot_t16_i16, dot_seq_gather (256-bit, as at the AVX2 level)
#include "kernels/lut_ymm.h"          // lut_blocks, lut_quantize

// 16 values per step: register-form compress (the memory form is slow on AMD Zen 4) and full
// 16-lane stores at the current counts (outputs have 16 floats of slack).
void partition_f32(const float* src, size_t n, float pivot, float* gt_out, float* lt_out, size_t* n_gt, size_t* n_lt) {
  const __m512 vp = _mm512_set1_ps(pivot);
  size_t g = 0, l = 0, i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(src + i);
    const __mmask16 mg = _mm512_cmp_ps_mask(v, vp, _CMP_GT_OQ);
    const __mmask16 ml = _mm512_cmp_ps_mask(v, vp, _CMP_LT_OQ);
    _mm512_storeu_ps(gt_out + g, _mm512_maskz_compress_ps(mg, v));
    _mm512_storeu_ps(lt_out + l, _mm512_maskz_compress_ps(ml, v));
    g += static_cast<size_t>(__builtin_popcount(mg));
    l += static_cast<size_t>(__builtin_popcount(ml));
  }
  if (i < n) {
    const __mmask16 tail = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 v = _mm512_maskz_loadu_ps(tail, src + i);
    const __mmask16 mg = _mm512_mask_cmp_ps_mask(tail, v, vp, _CMP_GT_OQ);
    const __mmask16 ml = _mm512_mask_cmp_ps_mask(tail, v, vp, _CMP_LT_OQ);
    _mm512_storeu_ps(gt_out + g, _mm512_maskz_compress_ps(mg, v));
    _mm512_storeu_ps(lt_out + l, _mm512_maskz_compress_ps(ml, v));
    g += static_cast<size_t>(__builtin_popcount(mg));
    l += static_cast<size_t>(__builtin_popcount(ml));
  }
  *n_gt = g;
  *n_lt = l;
}

constexpr KernelTable kTable = {
    SimdLevel::kAvx512, &dot,           &l2sqr,         &dot_batch,    &l2sqr_batch,    &dot_gather,
    &dot_i8_gather,     &scan_lut16,    &filter_scores, &dot_t16,      &dot_t16_multi,  &dot_t16_i16,
    &dot_seq_gather,    &partition_f32, &lut_blocks,    &lut_quantize, &dot_f16_gather,
};

}  // namespace

const KernelTable& table() {
  return kTable;
}

}  // namespace avx512
}  // namespace kernels
}  // namespace avq

#endif  // AVQ_HAVE_X86_KERNELS
