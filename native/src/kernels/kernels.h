// Hot kernels with one implementation per instruction set, chosen once at run time.
//
// Every ISA variant lives in its own translation unit (kernels_scalar.cpp, kernels_avx2.cpp,
// kernels_avx512.cpp), compiled with its own flags and wrapped in its own namespace, and fills
// one KernelTable. Nothing but this header is shared between the ISA translation units (ODR),
// apart from leaf_select_ymm.h: code both x86 units compile into their own anonymous namespace.
//
// Determinism contract: every variant returns bit-identical results for the same inputs.
//  * Float reductions use the canonical 16-lane order: acc[i % 16] += term(i) for i = 0..d-1
//    in increasing i, each term and each sum rounded to float (no FMA contraction; the whole
//    project builds with -ffp-contract=off), then acc[j] += acc[j + s] for s = 8, 4, 2, 1;
//    the result is acc[0]. term(i) is a[i]*b[i] (dot), (a[i]-b[i])^2 computed as
//    t = a[i]-b[i]; t*t (l2sqr), w[i]*float(x8[i]) (int8 dot) or q[i]*float(h[i]) (float16 dot).
//  * Integer kernels (LUT16 scan) are exact.
//  * filter_scores computes float(acc)*a + b (+ bias[i]) as separately rounded mul and adds.
// Hence search results and trained codes are identical at every SIMD level.
#pragma once

#include <cstddef>
#include <cstdint>

namespace avq {
namespace kernels {

enum class SimdLevel : int { kScalar = 0, kAvx2 = 1, kAvx512 = 2 };

const char* level_name(SimdLevel level);

struct KernelTable {
  SimdLevel level;

  // <a, b> over d floats, canonical order.
  float (*dot)(const float* a, const float* b, size_t d);
  // ||a - b||^2 over d floats, canonical order.
  float (*l2sqr)(const float* a, const float* b, size_t d);
  // out[i] = dot(q, x + i*d) for i < n. Layout of x: (n, d) row-major.
  void (*dot_batch)(const float* q, const float* x, size_t n, size_t d, float* out);
  // out[i] = l2sqr(q, x + i*d) for i < n. Layout of x: (n, d) row-major.
  void (*l2sqr_batch)(const float* q, const float* x, size_t n, size_t d, float* out);
  // out[i] = dot(q, rows[i]) for i < n (gathered rows, each d floats).
  void (*dot_gather)(const float* q, const float* const* rows, size_t n, size_t d, float* out);
  // out[i] = sum_j w[j] * float(rows[i][j]), canonical order (int8 reordering; w = q * scale).
  void (*dot_i8_gather)(const float* w, const int8_t* const* rows, size_t n, size_t d, float* out);

  // LUT16 scan of ngroups groups of 32 points.
  // codes layout: (ngroups, nblocks_pad, 16) bytes; in group g, block m, byte j (0..15) holds
  //   code(point 32g+j, m) in its low nibble and code(point 32g+j+16, m) in its high nibble.
  // lut layout: (nblocks_pad, 16) uint8; padding blocks have all-zero entries.
  // nblocks_pad is even (>= 2). The caller guarantees sum_m max_k lut[m][k] <= 65535.
  // out layout: (ngroups * 32) uint16, out[32g + p] = sum_m lut[m][code(32g+p, m)].
  void (*scan_lut16)(const uint8_t* codes, size_t ngroups, size_t nblocks_pad, const uint8_t* lut, uint16_t* out);

  // Threshold filter after a scan. For i < n: s = float(acc[i]) * a + b, then s = s + bias[i]
  // when bias != nullptr. Every i with s > thr is appended to out_idx / out_score in increasing i.
  // Returns the number appended (out arrays must hold n entries). Entries at positions >= the
  // returned count (below n) may be overwritten with unspecified values (the SIMD levels store
  // whole vectors of packed matches); nothing is written at positions >= n.
  size_t (*filter_scores)(const uint16_t* acc, const float* bias, size_t n, float a, float b, float thr,
                          uint32_t* out_idx, float* out_score);

  // Inner products of one query with many rows stored transposed in groups of 16 (partition
  // centres): ct layout (ngroups, d, 16), ct[(g*d + j)*16 + l] = row(16g + l)[j], zero padded.
  // out[16g + l] = sum over j = 0..d-1 in increasing order of q[j]*ct[...] (each product and
  // each sum rounded to float; a different order from `dot`, identical at every level).
  // out holds ngroups*16 floats.
  void (*dot_t16)(const float* q, const float* ct, size_t ngroups, size_t d, float* out);
  // dot_t16 for nq queries at once (k-means assignment): row p of q starts at q + p*ldq, its
  // ngroups*16 results at out + p*ldo. Bit-identical to nq calls of dot_t16; the SIMD levels read
  // each centre once per 4 queries instead of once per query (the table is streamed from cache).
  void (*dot_t16_multi)(const float* q, size_t nq, size_t ldq, const float* ct, size_t ngroups, size_t d, float* out,
                        size_t ldo);
  // Exact integer inner products of a 16-bit query with 16-bit rows stored in pairs of dimensions,
  // transposed in groups of 16 (the coarse first pass of leaf selection: half the bytes of the float
  // table, a quarter of its instructions): ct layout (ngroups, dp, 16, 2) with dp = d_pad / 2,
  // ct[((g*dp + i)*16 + l)*2 + t] = row(16g + l)[2i + t]; q holds d_pad values (zero padded).
  // out[16g + l] = sum_j q[j] * row(16g + l)[j] in int32: the caller bounds the sum of |products| by
  // 2^31 - 1 (then every partial sum is exact and the result is the same at every level).
  void (*dot_t16_i16)(const int16_t* q, const int16_t* ct, size_t ngroups, size_t dp, int32_t* out);
  // out[i] = dot_t16's sum for row rows[i] (d floats, row-major): sum over j = 0..d-1 in increasing
  // order of q[j]*rows[i][j], each product and each sum rounded to float. Bit-identical to the
  // dot_t16 entry of the same row, at every level (re-scoring the leaves the coarse pass kept).
  void (*dot_seq_gather)(const float* q, const float* const* rows, size_t n, size_t d, float* out);

  // Order-keeping three-way split around pivot (the step of the top-N selection): the values
  // > pivot go to gt_out, the values < pivot to lt_out, in their original order; returns the
  // two counts. Both outputs must hold n + 16 floats (entries past the counts are unspecified).
  void (*partition_f32)(const float* src, size_t n, float pivot, float* gt_out, float* lt_out, size_t* n_gt,
                        size_t* n_lt);

  // A query's per-block lookup tables (before their 8-bit quantisation). Blocks of dpb dimensions
  // (the last one holds the rest of d) over a codebook in the LUT layout (ct[j*16 + c]: dimension j,
  // centre c). For block m (dimensions o = m*dpb ..< o + dm): t[c] = sum over j < dm in increasing
  // order of q[o+j] * ct[(o+j)*16 + c], starting from 0 (dot_t16's order); mn[m] and mx[m] get the
  // least and greatest t[c] (exact), and lut[16m + c] = t[c] - mn[m].
  void (*lut_blocks)(const float* q, const float* ct, size_t d, size_t dpb, float* lut, float* mn, float* mx);
  // lut8[i] = uint8(int(min(lut[i] * s + 0.5f, 255.f))) for i < n, each operation rounded to float
  // (a truncating conversion; the caller keeps lut[i] * s + 0.5f within [0, 2^31)).
  void (*lut_quantize)(const float* lut, size_t n, float s, uint8_t* lut8);
  // out[i] = sum_j q[j] * float(rows[i][j]), canonical order, rows of d IEEE binary16 values
  // (float16 reordering; the conversion to float is exact, so every level agrees bit for bit).
  void (*dot_f16_gather)(const float* q, const uint16_t* const* rows, size_t n, size_t d, float* out);
};

// Implementations (each defined in its own TU; the AVX ones only exist on x86-64 builds).
namespace scalar {
const KernelTable& table();
}
#if defined(AVQ_HAVE_X86_KERNELS)
namespace avx2 {
const KernelTable& table();
}
namespace avx512 {
const KernelTable& table();
}
#endif

// CPU capabilities (CPUID + XGETBV, so the OS must also save the wider registers).
bool cpu_has_avx2();    // AVX2 + FMA + OS YMM state
bool cpu_has_avx512();  // AVX-512 F, BW, VL, DQ + OS ZMM/opmask state

// The best level that is both compiled in and supported by this CPU.
SimdLevel best_supported_level();
// The level chosen at first use: best_supported_level(), lowered by the environment variable
// AVQ_SIMD_LEVEL=scalar|avx2|avx512 (a request above what the CPU supports is clamped).
SimdLevel default_level();
// Table for a level; nullptr when that level is not compiled in or not supported by the CPU.
const KernelTable* table_for(SimdLevel level);
// The table in use (thread-safe; an atomic pointer, initialised once).
const KernelTable& active();
// Switch the table in use (tests and benchmarks). Returns false if the level is unavailable.
bool set_active_level(SimdLevel level);
// Parse "scalar" / "avx2" / "avx512"; returns false on an unknown name.
bool parse_level(const char* name, SimdLevel* out);

}  // namespace kernels
}  // namespace avq
