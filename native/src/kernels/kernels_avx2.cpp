// AVX2 implementation of the KernelTable (namespace avq::kernels::avx2).
//
// Compiled with -mavx2 -mfma -mbmi -mbmi2 (and the project-wide -ffp-contract=off); only ever
// called after cpu_has_avx2() said yes. Results are bit-identical to kernels_scalar.cpp:
//  * Float reductions keep the canonical 16 lanes in two __m256 accumulators (lo = lanes 0..7,
//    hi = lanes 8..15), use separate _mm256_mul_ps / _mm256_add_ps (never FMA), zero-fill the
//    tail with masked loads (adding +0.0f to a lane sum never changes it: a lane sum that starts
//    at +0.0f can never become -0.0f), and fold 8, 4, 2, 1 exactly like the scalar code.
//    This relies on -ffp-contract=off: GCC implements _mm256_mul_ps / _mm256_add_ps as plain vector
//    operators and would otherwise be free to fuse them into an FMA.
//  * The LUT16 scan is exact integer arithmetic.
//
// ODR note: this TU must not instantiate any inline function or template that other TUs could
// also instantiate (std:: algorithms etc.), because the linker could pick this AVX2-compiled copy
// for baseline code. Everything here is either an intrinsic (always inlined) or has internal
// linkage (anonymous namespace). The table is constant-initialised, so no AVX2 code runs at load.

#include "kernels/kernels.h"

#if defined(AVQ_HAVE_X86_KERNELS)

#include <immintrin.h>

#include <cstring>

namespace avq {
namespace kernels {
namespace avx2 {
namespace {

// kMaskSrc + 8 - k, loaded as 8 int32, gives a maskload mask with the first k lanes set (0..8).
alignas(64) const int32_t kMaskSrc[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

inline __m256i first_lanes_mask(size_t k) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskSrc + 8 - k));
}

// Canonical fold of the 16 lane sums held as lo = lanes 0..7, hi = lanes 8..15.
inline float fold16(__m256 lo, __m256 hi) {
  const __m256 v = _mm256_add_ps(lo, hi);                                         // s = 8
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));  // s = 4
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));                                         // s = 2: lanes 0,1 += lanes 2,3
  x = _mm_add_ss(x, _mm_shuffle_ps(x, x, 0x1));                                   // s = 1: lane 0 += lane 1
  return _mm_cvtss_f32(x);
}

// term(i) = a[i] * b[i]
struct DotTerm {
  static inline __m256 term(__m256 a, __m256 b) { return _mm256_mul_ps(a, b); }
};
// term(i) = t * t with t = a[i] - b[i]
struct L2Term {
  static inline __m256 term(__m256 a, __m256 b) {
    const __m256 t = _mm256_sub_ps(a, b);
    return _mm256_mul_ps(t, t);
  }
};

// R rows at once against the same query (shares the query loads; each row keeps its own two
// accumulators, so every row is reduced in exactly the canonical order).
template <class Term, int R>
inline void rows_f32(const float* q, const float* const* rows, size_t d, float* out) {
  __m256 lo[R], hi[R];
  for (int r = 0; r < R; ++r) {
    lo[r] = _mm256_setzero_ps();
    hi[r] = _mm256_setzero_ps();
  }
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m256 q0 = _mm256_loadu_ps(q + i);
    const __m256 q1 = _mm256_loadu_ps(q + i + 8);
    for (int r = 0; r < R; ++r) {
      lo[r] = _mm256_add_ps(lo[r], Term::term(q0, _mm256_loadu_ps(rows[r] + i)));
      hi[r] = _mm256_add_ps(hi[r], Term::term(q1, _mm256_loadu_ps(rows[r] + i + 8)));
    }
  }
  const size_t rem = d - i;  // 0..15
  if (rem > 8) {
    const __m256i m1 = first_lanes_mask(rem - 8);
    const __m256 q0 = _mm256_loadu_ps(q + i);
    const __m256 q1 = _mm256_maskload_ps(q + i + 8, m1);
    for (int r = 0; r < R; ++r) {
      lo[r] = _mm256_add_ps(lo[r], Term::term(q0, _mm256_loadu_ps(rows[r] + i)));
      hi[r] = _mm256_add_ps(hi[r], Term::term(q1, _mm256_maskload_ps(rows[r] + i + 8, m1)));
    }
  } else if (rem > 0) {
    const __m256i m0 = first_lanes_mask(rem);
    const __m256 q0 = _mm256_maskload_ps(q + i, m0);
    for (int r = 0; r < R; ++r) {
      lo[r] = _mm256_add_ps(lo[r], Term::term(q0, _mm256_maskload_ps(rows[r] + i, m0)));
    }
  }
  for (int r = 0; r < R; ++r) out[r] = fold16(lo[r], hi[r]);
}

// out[i] = reduce(q, x + i*d) for a row-major (n, d) matrix, 4 rows at a time.
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

// 16 int8 -> two __m256 of exact floats (elements 0..7 and 8..15).
inline void i8x16_to_f32(__m128i v, __m256* f0, __m256* f1) {
  *f0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
  *f1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_unpackhi_epi64(v, v)));
}

// Loads rem (1..15) int8 values from p into the low bytes of a vector, zeroing the rest, without
// touching memory past p + rem (fixed-size pieces of 8/4/2/1 bytes; rem is the same for every row
// of a call, so the branches are predictable).
inline __m128i load_i8_partial(const int8_t* p, size_t rem) {
  uint64_t first = 0, tail = 0;
  size_t o = 0;
  unsigned shift = 0;
  if (rem & 8) {
    std::memcpy(&first, p, 8);
    o = 8;
  }
  if (rem & 4) {
    uint32_t v;
    std::memcpy(&v, p + o, 4);
    tail |= static_cast<uint64_t>(v) << shift;
    shift += 32;
    o += 4;
  }
  if (rem & 2) {
    uint16_t v;
    std::memcpy(&v, p + o, 2);
    tail |= static_cast<uint64_t>(v) << shift;
    shift += 16;
    o += 2;
  }
  if (rem & 1) tail |= static_cast<uint64_t>(static_cast<uint8_t>(p[o])) << shift;
  // x86 is little-endian: byte k of the 16-byte vector is element k.
  if (rem & 8) return _mm_set_epi64x(static_cast<long long>(tail), static_cast<long long>(first));
  return _mm_set_epi64x(0, static_cast<long long>(tail));
}

// Row loaders of rows_cvt: 16 values of a row as two __m256 of exact floats (elements 0..7 and
// 8..15), and the last rem (1..15) values zero-extended without reading past the row.
struct I8Rows {  // int8 rows (int8 reordering)
  using T = int8_t;
  static void load16(const int8_t* p, __m256* a, __m256* b) {
    i8x16_to_f32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), a, b);
  }
  static void load_tail(const int8_t* p, size_t rem, __m256* a, __m256* b) {
    i8x16_to_f32(load_i8_partial(p, rem), a, b);
  }
};
struct F16Rows {  // IEEE binary16 rows (float16 reordering; F16C conversions are exact)
  using T = uint16_t;
  static void load16(const uint16_t* p, __m256* a, __m256* b) {
    *a = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    *b = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 8)));
  }
  static void load_tail(const uint16_t* p, size_t rem, __m256* a, __m256* b) {
    alignas(16) uint16_t tail[16] = {0};
    std::memcpy(tail, p, rem * sizeof(uint16_t));
    load16(tail, a, b);
  }
};

// R rows of L's type at once: acc[i % 16] += w[i] * float(row[i]), canonical order.
template <class L, int R>
inline void rows_cvt(const float* w, const typename L::T* const* rows, size_t d, float* out) {
  __m256 lo[R], hi[R];
  for (int r = 0; r < R; ++r) {
    lo[r] = _mm256_setzero_ps();
    hi[r] = _mm256_setzero_ps();
  }
  size_t i = 0;
  for (; i + 16 <= d; i += 16) {
    const __m256 w0 = _mm256_loadu_ps(w + i);
    const __m256 w1 = _mm256_loadu_ps(w + i + 8);
    for (int r = 0; r < R; ++r) {
      __m256 x0, x1;
      L::load16(rows[r] + i, &x0, &x1);
      lo[r] = _mm256_add_ps(lo[r], _mm256_mul_ps(w0, x0));
      hi[r] = _mm256_add_ps(hi[r], _mm256_mul_ps(w1, x1));
    }
  }
  const size_t rem = d - i;  // 0..15
  if (rem > 0) {
    // Weights beyond d are masked to +0 and the row's tail is zero-extended without reading past
    // the row, so the extra terms are +0 * 0 = +0 and leave the lane sums unchanged.
    __m256 w0, w1;
    if (rem > 8) {
      w0 = _mm256_loadu_ps(w + i);
      w1 = _mm256_maskload_ps(w + i + 8, first_lanes_mask(rem - 8));
    } else {
      w0 = _mm256_maskload_ps(w + i, first_lanes_mask(rem));
      w1 = _mm256_setzero_ps();
    }
    for (int r = 0; r < R; ++r) {
      __m256 x0, x1;
      L::load_tail(rows[r] + i, rem, &x0, &x1);
      lo[r] = _mm256_add_ps(lo[r], _mm256_mul_ps(w0, x0));
      hi[r] = _mm256_add_ps(hi[r], _mm256_mul_ps(w1, x1));
    }
  }
  for (int r = 0; r < R; ++r) out[r] = fold16(lo[r], hi[r]);
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

// LUT16 scan (FastScan-style in-register lookups).
// codes: (ngroups, nblocks_pad, 16) bytes; byte j of block m in group g holds code(32g+j, m) in
// its low nibble and code(32g+j+16, m) in its high nibble. lut: (nblocks_pad, 16) uint8.
// out: (ngroups * 32) uint16 in natural point order.
//
// One step handles blocks m and m+1: a 256-bit load of 32 contiguous code bytes puts block m in
// the low 128-bit lane and block m+1 in the high lane, and the 32 contiguous LUT bytes line up the
// same way, so one vpshufb (which shuffles within 128-bit lanes) looks up both blocks; one vpshufb
// for the low nibbles (points 0..15), one for the high nibbles (points 16..31).
//
// Widening the looked-up bytes to uint16 without overflow: in 16-bit lane k of a 128-bit lane,
// byte 2k belongs to point 2k ("even") and byte 2k+1 to point 2k+1 ("odd"). Per nibble half we
// keep two uint16 accumulators (4 in total):
//   odd += v >> 8                 -- exact sum of the odd bytes;
//   all += v (as uint16 lanes)    -- sum of (even + 256 * odd), wrapping modulo 2^16;
// and recover even = all - (odd << 8) modulo 2^16 at the end of the group. That is exactly the
// sum of the even bytes because that sum is <= 65535 (the caller guarantees sum_m max_k lut[m][k]
// <= 65535), and it is the same as splitting with (v & 0x00FF) / (v >> 8) while saving one AND
// per lookup (about 12% faster). At the end of the group the two 128-bit lanes (even / odd
// blocks) are added, even is recovered, and even/odd are interleaved back into point order.
// No per-block branches; the group's accumulators stay in registers.
void scan_lut16(const uint8_t* codes, size_t ngroups, size_t nblocks_pad, const uint8_t* lut, uint16_t* out) {
  const __m256i nib = _mm256_set1_epi8(0x0F);
  const size_t group_bytes = nblocks_pad * 16;
  for (size_t g = 0; g < ngroups; ++g) {
    const uint8_t* c = codes + g * group_bytes;
    __m256i lo_all = _mm256_setzero_si256();  // points 0..15, even + 256 * odd (mod 2^16)
    __m256i lo_odd = _mm256_setzero_si256();  // points 0..15, odd bytes
    __m256i hi_all = _mm256_setzero_si256();  // points 16..31
    __m256i hi_odd = _mm256_setzero_si256();
    for (size_t off = 0; off < group_bytes; off += 32) {
      const __m256i cv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c + off));
      const __m256i lv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(lut + off));
      const __m256i lo_idx = _mm256_and_si256(cv, nib);
      const __m256i hi_idx = _mm256_and_si256(_mm256_srli_epi16(cv, 4), nib);
      const __m256i vlo = _mm256_shuffle_epi8(lv, lo_idx);
      const __m256i vhi = _mm256_shuffle_epi8(lv, hi_idx);
      lo_all = _mm256_add_epi16(lo_all, vlo);
      lo_odd = _mm256_add_epi16(lo_odd, _mm256_srli_epi16(vlo, 8));
      hi_all = _mm256_add_epi16(hi_all, vhi);
      hi_odd = _mm256_add_epi16(hi_odd, _mm256_srli_epi16(vhi, 8));
    }
    // Add the two 128-bit lanes (blocks m and m+1), recover the even sums, interleave.
    __m128i all = _mm_add_epi16(_mm256_castsi256_si128(lo_all), _mm256_extracti128_si256(lo_all, 1));
    __m128i odd = _mm_add_epi16(_mm256_castsi256_si128(lo_odd), _mm256_extracti128_si256(lo_odd, 1));
    __m128i even = _mm_sub_epi16(all, _mm_slli_epi16(odd, 8));
    __m128i* o = reinterpret_cast<__m128i*>(out + g * 32);
    _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(even, odd));  // points 0..7
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(even, odd));  // points 8..15
    all = _mm_add_epi16(_mm256_castsi256_si128(hi_all), _mm256_extracti128_si256(hi_all, 1));
    odd = _mm_add_epi16(_mm256_castsi256_si128(hi_odd), _mm256_extracti128_si256(hi_odd, 1));
    even = _mm_sub_epi16(all, _mm_slli_epi16(odd, 8));
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(even, odd));  // points 16..23
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(even, odd));  // points 24..31
  }
}

// Left-packing permutation for an 8-bit compare mask: for mask m, nibble k of kCompress.v[m] is
// the position of the k-th set bit of m (unused nibbles 0). 1 KB, constant-initialised.
struct CompressTable {
  uint32_t v[256];
};
constexpr CompressTable make_compress_table() {
  CompressTable t{};
  for (unsigned m = 0; m < 256; ++m) {
    uint32_t packed = 0;
    unsigned k = 0;
    for (unsigned j = 0; j < 8; ++j) {
      if ((m >> j) & 1u) {
        packed |= j << (4 * k);
        ++k;
      }
    }
    t.v[m] = packed;
  }
  return t;
}
constexpr CompressTable kCompress = make_compress_table();

// s = float(acc[i]) * a + b (+ bias[i]), separately rounded; append i where s > thr, in
// increasing i. 8 points per step, branch-free: the compare mask selects a left-packing
// permutation (kCompress), which packs the matching scores (vpermps) and, added to i, gives the
// matching indices directly; both are stored as full 8-lane vectors at position count, and count
// advances by popcount(mask). The stores stay inside the n-entry outputs (count <= i, i + 8 <= n)
// but may leave unspecified values in entries >= the returned count (AVX2 masked stores,
// vmaskmovps, are very slow on AMD, so they are avoided). Tail (< 8 points): scalar, same
// arithmetic.
template <bool kHasBias>
inline size_t filter_impl(const uint16_t* acc, const float* bias, size_t n, float a, float b, float thr,
                          uint32_t* out_idx, float* out_score) {
  const __m256 va = _mm256_set1_ps(a);
  const __m256 vb = _mm256_set1_ps(b);
  const __m256 vthr = _mm256_set1_ps(thr);
  const __m256i nibble_shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i nibble_mask = _mm256_set1_epi32(0xF);
  size_t k = 0;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i a16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(acc + i));
    __m256 s = _mm256_cvtepi32_ps(_mm256_cvtepu16_epi32(a16));
    s = _mm256_mul_ps(s, va);
    s = _mm256_add_ps(s, vb);
    if (kHasBias) s = _mm256_add_ps(s, _mm256_loadu_ps(bias + i));
    const unsigned m = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(s, vthr, _CMP_GT_OQ)));
    const __m256i perm = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(kCompress.v[m])), nibble_shifts), nibble_mask);
    const __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(i)), perm);
    // Full 8-lane stores: k <= i and i + 8 <= n, so they stay inside the n-entry outputs.
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out_idx + k), idx);
    _mm256_storeu_ps(out_score + k, _mm256_permutevar8x32_ps(s, perm));
    k += static_cast<size_t>(__builtin_popcount(m));
  }
  for (; i < n; ++i) {  // same arithmetic as the scalar reference
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

// Constant-initialised (no dynamic initialiser, hence no AVX2 code at load time).
// Two groups (four 8-lane accumulators) per pass to hide the add latency.
void dot_t16(const float* q, const float* ct, size_t ngroups, size_t d, float* out) {
  size_t g = 0;
  for (; g + 2 <= ngroups; g += 2) {
    const float* c0 = ct + g * d * 16;
    const float* c1 = c0 + d * 16;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
    for (size_t j = 0; j < d; ++j) {
      const __m256 qj = _mm256_set1_ps(q[j]);
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(qj, _mm256_loadu_ps(c0 + j * 16)));
      a1 = _mm256_add_ps(a1, _mm256_mul_ps(qj, _mm256_loadu_ps(c0 + j * 16 + 8)));
      a2 = _mm256_add_ps(a2, _mm256_mul_ps(qj, _mm256_loadu_ps(c1 + j * 16)));
      a3 = _mm256_add_ps(a3, _mm256_mul_ps(qj, _mm256_loadu_ps(c1 + j * 16 + 8)));
    }
    _mm256_storeu_ps(out + g * 16, a0);
    _mm256_storeu_ps(out + g * 16 + 8, a1);
    _mm256_storeu_ps(out + g * 16 + 16, a2);
    _mm256_storeu_ps(out + g * 16 + 24, a3);
  }
  for (; g < ngroups; ++g) {
    const float* c0 = ct + g * d * 16;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (size_t j = 0; j < d; ++j) {
      const __m256 qj = _mm256_set1_ps(q[j]);
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(qj, _mm256_loadu_ps(c0 + j * 16)));
      a1 = _mm256_add_ps(a1, _mm256_mul_ps(qj, _mm256_loadu_ps(c0 + j * 16 + 8)));
    }
    _mm256_storeu_ps(out + g * 16, a0);
    _mm256_storeu_ps(out + g * 16 + 8, a1);
  }
}

// Four queries per pass over the table (8 accumulators: 4 queries x 16 centres), so each centre
// row is loaded once per 4 queries; per output the same sequential sum as dot_t16.
void dot_t16_multi(const float* q, size_t nq, size_t ldq, const float* ct, size_t ngroups, size_t d, float* out,
                   size_t ldo) {
  size_t p = 0;
  for (; p + 4 <= nq; p += 4) {
    const float* q0 = q + p * ldq;
    const float* q1 = q0 + ldq;
    const float* q2 = q1 + ldq;
    const float* q3 = q2 + ldq;
    for (size_t g = 0; g < ngroups; ++g) {
      const float* c = ct + g * d * 16;
      __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
      __m256 a2 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
      for (size_t j = 0; j < d; ++j) {
        const __m256 lo = _mm256_loadu_ps(c + j * 16), hi = _mm256_loadu_ps(c + j * 16 + 8);
        __m256 v = _mm256_set1_ps(q0[j]);
        a0 = _mm256_add_ps(a0, _mm256_mul_ps(v, lo));
        b0 = _mm256_add_ps(b0, _mm256_mul_ps(v, hi));
        v = _mm256_set1_ps(q1[j]);
        a1 = _mm256_add_ps(a1, _mm256_mul_ps(v, lo));
        b1 = _mm256_add_ps(b1, _mm256_mul_ps(v, hi));
        v = _mm256_set1_ps(q2[j]);
        a2 = _mm256_add_ps(a2, _mm256_mul_ps(v, lo));
        b2 = _mm256_add_ps(b2, _mm256_mul_ps(v, hi));
        v = _mm256_set1_ps(q3[j]);
        a3 = _mm256_add_ps(a3, _mm256_mul_ps(v, lo));
        b3 = _mm256_add_ps(b3, _mm256_mul_ps(v, hi));
      }
      float* o = out + p * ldo + g * 16;
      _mm256_storeu_ps(o, a0);
      _mm256_storeu_ps(o + 8, b0);
      _mm256_storeu_ps(o + ldo, a1);
      _mm256_storeu_ps(o + ldo + 8, b1);
      _mm256_storeu_ps(o + 2 * ldo, a2);
      _mm256_storeu_ps(o + 2 * ldo + 8, b2);
      _mm256_storeu_ps(o + 3 * ldo, a3);
      _mm256_storeu_ps(o + 3 * ldo + 8, b3);
    }
  }
  for (; p < nq; ++p) dot_t16(q + p * ldq, ct, ngroups, d, out + p * ldo);
}

#include "kernels/leaf_select_ymm.h"  // dot_t16_i16, dot_seq_gather
#include "kernels/lut_ymm.h"          // lut_blocks, lut_quantize

// 8 values per step; the compare masks pick left-packing permutations (kCompress) and full
// 8-lane stores go to the current counts (outputs have 16 floats of slack).
void partition_f32(const float* src, size_t n, float pivot, float* gt_out, float* lt_out, size_t* n_gt, size_t* n_lt) {
  const __m256 vp = _mm256_set1_ps(pivot);
  const __m256i nibble_shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
  const __m256i nibble_mask = _mm256_set1_epi32(0xF);
  size_t g = 0, l = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(src + i);
    const unsigned mg = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, vp, _CMP_GT_OQ)));
    const unsigned ml = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, vp, _CMP_LT_OQ)));
    const __m256i pg = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(kCompress.v[mg])), nibble_shifts), nibble_mask);
    const __m256i pl = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(kCompress.v[ml])), nibble_shifts), nibble_mask);
    _mm256_storeu_ps(gt_out + g, _mm256_permutevar8x32_ps(v, pg));
    _mm256_storeu_ps(lt_out + l, _mm256_permutevar8x32_ps(v, pl));
    g += static_cast<size_t>(__builtin_popcount(mg));
    l += static_cast<size_t>(__builtin_popcount(ml));
  }
  for (; i < n; ++i) {
    const float v = src[i];
    gt_out[g] = v;
    g += v > pivot;
    lt_out[l] = v;
    l += v < pivot;
  }
  *n_gt = g;
  *n_lt = l;
}

constexpr KernelTable kTable = {
    SimdLevel::kAvx2, &dot,           &l2sqr,         &dot_batch,    &l2sqr_batch,    &dot_gather,
    &dot_i8_gather,   &scan_lut16,    &filter_scores, &dot_t16,      &dot_t16_multi,  &dot_t16_i16,
    &dot_seq_gather,  &partition_f32, &lut_blocks,    &lut_quantize, &dot_f16_gather,
};

}  // namespace

const KernelTable& table() {
  return kTable;
}

}  // namespace avx2
}  // namespace kernels
}  // namespace avq

#endif  // AVQ_HAVE_X86_KERNELS
