// Leaf-selection kernels written with 256-bit AVX2 intrinsics, shared by the AVX2 and AVX-512
// levels (the coarse pass is bound by memory, not by arithmetic): dot_t16_i16 and dot_seq_gather
// of KernelTable (kernels.h). Not a normal header: kernels_avx2.cpp and kernels_avx512.cpp each
// include it inside their own anonymous namespace, after <immintrin.h> and <cstring>, so each TU
// gets its own internal-linkage copy compiled with its own flags (no shared symbol: see the ODR
// note in kernels_avx2.cpp).
#pragma once

// Exact int32 sums of 16-bit products: _mm256_madd_epi16 multiplies the query's pair (2i, 2i+1),
// broadcast to every 32-bit lane, with eight centres' pairs and adds each pair. Two groups per pass.
void dot_t16_i16(const int16_t* q, const int16_t* ct, size_t ngroups, size_t dp, int32_t* out) {
  size_t g = 0;
  const size_t gs = dp * 32;
  for (; g + 2 <= ngroups; g += 2) {
    const int16_t* c0 = ct + g * gs;
    const int16_t* c1 = c0 + gs;
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256(), a2 = _mm256_setzero_si256(),
            a3 = _mm256_setzero_si256();
    for (size_t i = 0; i < dp; ++i) {
      int32_t pair;
      std::memcpy(&pair, q + 2 * i, 4);
      const __m256i qi = _mm256_set1_epi32(pair);
      const __m256i* r0 = reinterpret_cast<const __m256i*>(c0 + i * 32);
      const __m256i* r1 = reinterpret_cast<const __m256i*>(c1 + i * 32);
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(qi, _mm256_loadu_si256(r0)));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(qi, _mm256_loadu_si256(r0 + 1)));
      a2 = _mm256_add_epi32(a2, _mm256_madd_epi16(qi, _mm256_loadu_si256(r1)));
      a3 = _mm256_add_epi32(a3, _mm256_madd_epi16(qi, _mm256_loadu_si256(r1 + 1)));
    }
    __m256i* o = reinterpret_cast<__m256i*>(out + g * 16);
    _mm256_storeu_si256(o, a0);
    _mm256_storeu_si256(o + 1, a1);
    _mm256_storeu_si256(o + 2, a2);
    _mm256_storeu_si256(o + 3, a3);
  }
  for (; g < ngroups; ++g) {
    const int16_t* c0 = ct + g * gs;
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    for (size_t i = 0; i < dp; ++i) {
      int32_t pair;
      std::memcpy(&pair, q + 2 * i, 4);
      const __m256i qi = _mm256_set1_epi32(pair);
      const __m256i* r0 = reinterpret_cast<const __m256i*>(c0 + i * 32);
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(qi, _mm256_loadu_si256(r0)));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(qi, _mm256_loadu_si256(r0 + 1)));
    }
    __m256i* o = reinterpret_cast<__m256i*>(out + g * 16);
    _mm256_storeu_si256(o, a0);
    _mm256_storeu_si256(o + 1, a1);
  }
}

// Eight rows per pass, one per lane: 8 x 8 blocks of the rows transposed in registers, so that lane
// r accumulates q[j] * rows[r][j] in increasing j (dot_t16's order); the d % 8 tail and the last
// n % 8 rows in scalar code, in the same order.
void dot_seq_gather(const float* q, const float* const* rows, size_t n, size_t d, float* out) {
  const size_t d8 = d - d % 8;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const float* const* r = rows + i;
    __m256 acc = _mm256_setzero_ps();
    for (size_t j = 0; j < d8; j += 8) {
      const __m256 t0 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[0] + j), _mm256_loadu_ps(r[1] + j));
      const __m256 t1 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[0] + j), _mm256_loadu_ps(r[1] + j));
      const __m256 t2 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[2] + j), _mm256_loadu_ps(r[3] + j));
      const __m256 t3 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[2] + j), _mm256_loadu_ps(r[3] + j));
      const __m256 t4 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[4] + j), _mm256_loadu_ps(r[5] + j));
      const __m256 t5 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[4] + j), _mm256_loadu_ps(r[5] + j));
      const __m256 t6 = _mm256_unpacklo_ps(_mm256_loadu_ps(r[6] + j), _mm256_loadu_ps(r[7] + j));
      const __m256 t7 = _mm256_unpackhi_ps(_mm256_loadu_ps(r[6] + j), _mm256_loadu_ps(r[7] + j));
      // u_k: rows 0..3 (low half) / 4..7 (high half) of columns k and k + 4 (low / high 128 bits)
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
      const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j + 0]), _mm256_permute2f128_ps(u0, u4, 0x20)));
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j + 1]), _mm256_permute2f128_ps(u1, u5, 0x20)));
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j + 2]), _mm256_permute2f128_ps(u2, u6, 0x20)));
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j + 3]), _mm256_permute2f128_ps(u3, u7, 0x20)));
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j + 4]), _mm256_permute2f128_ps(u0, u4, 0x31)));
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j + 5]), _mm256_permute2f128_ps(u1, u5, 0x31)));
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j + 6]), _mm256_permute2f128_ps(u2, u6, 0x31)));
      acc = _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(q[j + 7]), _mm256_permute2f128_ps(u3, u7, 0x31)));
    }
    alignas(32) float a[8];
    _mm256_store_ps(a, acc);
    for (size_t l = 0; l < 8; ++l) {
      float s = a[l];
      for (size_t j = d8; j < d; ++j) s = s + q[j] * r[l][j];
      out[i + l] = s;
    }
  }
  for (; i < n; ++i) {
    float s = 0.f;
    for (size_t j = 0; j < d; ++j) s = s + q[j] * rows[i][j];
    out[i] = s;
  }
}
