// Lookup-table kernels written with 256-bit AVX2 intrinsics, shared by the AVX2 and AVX-512
// levels (16 entries per block fill two 8-lane vectors exactly): lut_blocks and lut_quantize of
// KernelTable (kernels.h). Not a normal header: kernels_avx2.cpp and kernels_avx512.cpp each
// include it inside their own anonymous namespace, after <immintrin.h>, so each TU gets its own
// internal-linkage copy compiled with its own flags (see leaf_select_ymm.h).
#pragma once

// Least and greatest of the 16 lanes of (a, b); min and max are exact, so the order of the
// reduction does not matter: no NaN reaches here (queries and codebooks are finite), and no -0
// either (a sum that starts from +0 is never -0 under round-to-nearest).
inline void minmax16(__m256 a, __m256 b, float* lo, float* hi) {
  __m256 mn = _mm256_min_ps(a, b), mx = _mm256_max_ps(a, b);
  __m128 m = _mm_min_ps(_mm256_castps256_ps128(mn), _mm256_extractf128_ps(mn, 1));
  m = _mm_min_ps(m, _mm_movehl_ps(m, m));
  m = _mm_min_ss(m, _mm_shuffle_ps(m, m, 1));
  __m128 x = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
  x = _mm_max_ps(x, _mm_movehl_ps(x, x));
  x = _mm_max_ss(x, _mm_shuffle_ps(x, x, 1));
  *lo = _mm_cvtss_f32(m);
  *hi = _mm_cvtss_f32(x);
}

// One block per pass: two 8-lane accumulators of products and sums rounded separately, in the
// scalar level's order, then the block's minimum subtracted.
void lut_blocks(const float* q, const float* ct, size_t d, size_t dpb, float* lut, float* mn, float* mx) {
  for (size_t m = 0, o = 0; o < d; ++m, o += dpb) {
    const size_t dm = d - o < dpb ? d - o : dpb;
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (size_t j = 0; j < dm; ++j) {
      const __m256 qj = _mm256_set1_ps(q[o + j]);
      const float* c = ct + (o + j) * 16;
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(qj, _mm256_loadu_ps(c)));
      a1 = _mm256_add_ps(a1, _mm256_mul_ps(qj, _mm256_loadu_ps(c + 8)));
    }
    float lo, hi;
    minmax16(a0, a1, &lo, &hi);
    const __m256 vlo = _mm256_set1_ps(lo);
    _mm256_storeu_ps(lut + m * 16, _mm256_sub_ps(a0, vlo));
    _mm256_storeu_ps(lut + m * 16 + 8, _mm256_sub_ps(a1, vlo));
    mn[m] = lo;
    mx[m] = hi;
  }
}

// Eight entries per step: multiply, add 0.5, clamp at 255 (vminps keeps v when v < 255, as the
// scalar comparison does), truncate to int32, narrow to bytes (values are within 0..255).
void lut_quantize(const float* lut, size_t n, float s, uint8_t* lut8) {
  const __m256 vs = _mm256_set1_ps(s), half = _mm256_set1_ps(0.5f), top = _mm256_set1_ps(255.f);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 v = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(lut + i), vs), half);
    v = _mm256_min_ps(v, top);
    const __m256i w = _mm256_cvttps_epi32(v);
    const __m128i h = _mm_packs_epi32(_mm256_castsi256_si128(w), _mm256_extracti128_si256(w, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(lut8 + i), _mm_packus_epi16(h, h));
  }
  for (; i < n; ++i) {
    float v = lut[i] * s;
    v = v + 0.5f;
    v = v < 255.f ? v : 255.f;
    lut8[i] = static_cast<uint8_t>(static_cast<int>(v));
  }
}
