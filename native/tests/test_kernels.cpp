// Kernel tests: every available SIMD level against the scalar reference (bit-identical float
// results, exact integer scan results, identical filter output) and against naive references
// (double precision for floats, straightforward loops for the scan and the filter), plus the
// dispatch helpers. Self-contained: no framework. Prints "N passed, N failed" and returns non-zero
// when anything failed.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace k = avq::kernels;

namespace {

int g_passed = 0;
int g_failed = 0;

void check(bool ok, const std::string& what) {
  if (ok) {
    ++g_passed;
  } else {
    ++g_failed;
    std::printf("FAIL: %s\n", what.c_str());
  }
}

std::mt19937_64& rng() {
  static std::mt19937_64 r(20240611ull);
  return r;
}

std::vector<float> rand_floats(size_t n, float lo = -1.0f, float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(rng());
  return v;
}

std::vector<int8_t> rand_i8(size_t n) {
  std::uniform_int_distribution<int> dist(-128, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(dist(rng()));
  return v;
}

bool bits_equal(const float* a, const float* b, size_t n) {
  return std::memcmp(a, b, n * sizeof(float)) == 0;
}

// |got - ref| within a generous bound on float summation error: eps * d * sum |terms|.
bool close_to(float got, double ref, double abs_sum, size_t d) {
  const double tol = 1e-7 * static_cast<double>(d + 16) * abs_sum + 1e-30;
  return std::fabs(static_cast<double>(got) - ref) <= tol;
}

std::string ctx(const k::KernelTable& t, const char* fn, size_t d, size_t n = 0) {
  return std::string(k::level_name(t.level)) + " " + fn + " d=" + std::to_string(d) + " n=" + std::to_string(n);
}

const size_t kDims[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 50, 97, 1000};

// ---------------------------------------------------------------------------------------------
// Float kernels
// ---------------------------------------------------------------------------------------------
void test_float_kernels(const k::KernelTable& t, const k::KernelTable& ref) {
  for (size_t d : kDims) {
    for (int rep = 0; rep < 3; ++rep) {
      // Offset by one float so nothing is 32/64-byte aligned.
      std::vector<float> abuf = rand_floats(d + 1), bbuf = rand_floats(d + 1, -2.0f, 2.0f);
      const float* a = abuf.data() + 1;
      const float* b = bbuf.data() + 1;
      double rdot = 0, rdot_abs = 0, rl2 = 0;
      for (size_t i = 0; i < d; ++i) {
        const double p = static_cast<double>(a[i]) * b[i];
        rdot += p;
        rdot_abs += std::fabs(p);
        const double diff = static_cast<double>(a[i]) - b[i];
        rl2 += diff * diff;
      }
      const float s_dot = ref.dot(a, b, d), v_dot = t.dot(a, b, d);
      const float s_l2 = ref.l2sqr(a, b, d), v_l2 = t.l2sqr(a, b, d);
      check(bits_equal(&s_dot, &v_dot, 1), ctx(t, "dot bit-identical", d));
      check(bits_equal(&s_l2, &v_l2, 1), ctx(t, "l2sqr bit-identical", d));
      check(close_to(v_dot, rdot, rdot_abs, d), ctx(t, "dot vs double", d));
      check(close_to(v_l2, rl2, rl2, d), ctx(t, "l2sqr vs double", d));
    }

    for (size_t n : {size_t(1), size_t(3), size_t(4), size_t(5), size_t(9), size_t(37)}) {
      std::vector<float> qbuf = rand_floats(d + 1);
      std::vector<float> xbuf = rand_floats(n * d + 1);
      const float* q = qbuf.data() + 1;
      const float* x = xbuf.data() + 1;
      std::vector<const float*> rows(n);
      for (size_t i = 0; i < n; ++i) rows[i] = x + ((i * 7) % n) * d;  // permuted gather

      std::vector<float> s_out(n), v_out(n);
      ref.dot_batch(q, x, n, d, s_out.data());
      t.dot_batch(q, x, n, d, v_out.data());
      check(bits_equal(s_out.data(), v_out.data(), n), ctx(t, "dot_batch bit-identical", d, n));
      bool ok = true;
      for (size_t i = 0; i < n; ++i) {
        double r = 0, ra = 0;
        for (size_t j = 0; j < d; ++j) {
          const double p = static_cast<double>(q[j]) * x[i * d + j];
          r += p;
          ra += std::fabs(p);
        }
        ok = ok && close_to(v_out[i], r, ra, d);
        float single = ref.dot(q, x + i * d, d);
        ok = ok && bits_equal(&single, &v_out[i], 1);  // batch == single-row kernel
      }
      check(ok, ctx(t, "dot_batch vs double/single", d, n));

      ref.l2sqr_batch(q, x, n, d, s_out.data());
      t.l2sqr_batch(q, x, n, d, v_out.data());
      check(bits_equal(s_out.data(), v_out.data(), n), ctx(t, "l2sqr_batch bit-identical", d, n));
      ok = true;
      for (size_t i = 0; i < n; ++i) {
        double r = 0;
        for (size_t j = 0; j < d; ++j) {
          const double diff = static_cast<double>(q[j]) - x[i * d + j];
          r += diff * diff;
        }
        ok = ok && close_to(v_out[i], r, r, d);
        float single = ref.l2sqr(q, x + i * d, d);
        ok = ok && bits_equal(&single, &v_out[i], 1);
      }
      check(ok, ctx(t, "l2sqr_batch vs double/single", d, n));

      ref.dot_gather(q, rows.data(), n, d, s_out.data());
      t.dot_gather(q, rows.data(), n, d, v_out.data());
      check(bits_equal(s_out.data(), v_out.data(), n), ctx(t, "dot_gather bit-identical", d, n));
      ok = true;
      for (size_t i = 0; i < n; ++i) {
        double r = 0, ra = 0;
        for (size_t j = 0; j < d; ++j) {
          const double p = static_cast<double>(q[j]) * rows[i][j];
          r += p;
          ra += std::fabs(p);
        }
        ok = ok && close_to(v_out[i], r, ra, d);
      }
      check(ok, ctx(t, "dot_gather vs double", d, n));

      // int8 rows: separate allocations of exactly d bytes each (catches over-reads with ASan).
      std::vector<std::vector<int8_t>> i8rows(n);
      std::vector<const int8_t*> i8ptrs(n);
      for (size_t i = 0; i < n; ++i) {
        i8rows[i] = rand_i8(d);
        i8ptrs[i] = i8rows[i].data();
      }
      std::vector<float> w = rand_floats(d, -0.01f, 0.01f);
      ref.dot_i8_gather(w.data(), i8ptrs.data(), n, d, s_out.data());
      t.dot_i8_gather(w.data(), i8ptrs.data(), n, d, v_out.data());
      check(bits_equal(s_out.data(), v_out.data(), n), ctx(t, "dot_i8_gather bit-identical", d, n));
      ok = true;
      for (size_t i = 0; i < n; ++i) {
        double r = 0, ra = 0;
        for (size_t j = 0; j < d; ++j) {
          const double p = static_cast<double>(w[j]) * i8ptrs[i][j];
          r += p;
          ra += std::fabs(p);
        }
        ok = ok && close_to(v_out[i], r, ra, d);
      }
      check(ok, ctx(t, "dot_i8_gather vs double", d, n));

      // float16 rows: random finite halves (every exponent, subnormals and signed zeros included),
      // separate allocations of exactly d values each; the reference decodes them independently.
      std::vector<std::vector<uint16_t>> hrows(n);
      std::vector<const uint16_t*> hptrs(n);
      for (size_t i = 0; i < n; ++i) {
        hrows[i].resize(d);
        for (size_t j = 0; j < d; ++j) {
          uint16_t h;
          do h = static_cast<uint16_t>(rng()() & 0xFFFFu);
          while (((h >> 10) & 0x1F) == 0x1F || ((h >> 10) & 0x1F) > 20);  // finite, |h| < 64
          hrows[i][j] = h;
        }
        hptrs[i] = hrows[i].data();
      }
      ref.dot_f16_gather(q, hptrs.data(), n, d, s_out.data());
      t.dot_f16_gather(q, hptrs.data(), n, d, v_out.data());
      check(bits_equal(s_out.data(), v_out.data(), n), ctx(t, "dot_f16_gather bit-identical", d, n));
      ok = true;
      for (size_t i = 0; i < n; ++i) {
        double r = 0, ra = 0;
        for (size_t j = 0; j < d; ++j) {
          const uint16_t h = hptrs[i][j];
          const int e = (h >> 10) & 0x1F, m = h & 0x3FF;
          const double mag = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(1024 + m), e - 25);
          const double p = static_cast<double>(q[j]) * ((h & 0x8000) ? -mag : mag);
          r += p;
          ra += std::fabs(p);
        }
        ok = ok && close_to(v_out[i], r, ra, d);
      }
      check(ok, ctx(t, "dot_f16_gather vs double", d, n));
    }
  }

  // Special values: signed zeros, exact cancellation, infinities, large magnitudes.
  {
    const size_t d = 37;
    std::vector<float> a(d, -0.0f), b(d, 0.0f);
    float s = ref.dot(a.data(), b.data(), d), v = t.dot(a.data(), b.data(), d);
    check(bits_equal(&s, &v, 1), ctx(t, "dot signed zeros", d));
    s = ref.l2sqr(a.data(), b.data(), d);
    v = t.l2sqr(a.data(), b.data(), d);
    check(bits_equal(&s, &v, 1), ctx(t, "l2sqr signed zeros", d));
    for (size_t i = 0; i < d; ++i) {
      a[i] = (i % 2 ? 1e30f : -1e30f) * static_cast<float>(i + 1);
      b[i] = 1e8f;
    }
    s = ref.dot(a.data(), b.data(), d);
    v = t.dot(a.data(), b.data(), d);
    check(bits_equal(&s, &v, 1), ctx(t, "dot overflow to inf", d));
    a[5] = INFINITY;
    s = ref.l2sqr(a.data(), b.data(), d);
    v = t.l2sqr(a.data(), b.data(), d);
    check(bits_equal(&s, &v, 1), ctx(t, "l2sqr inf", d));
  }
  // d == 0: the empty sum is +0.0f.
  {
    float dummy = 1.0f;
    float v = t.dot(&dummy, &dummy, 0);
    const float zero = 0.0f;
    check(bits_equal(&v, &zero, 1), ctx(t, "dot d=0", 0));
  }
}

// ---------------------------------------------------------------------------------------------
// LUT16 scan
// ---------------------------------------------------------------------------------------------
void naive_scan(const uint8_t* codes, size_t ngroups, size_t nb, const uint8_t* lut, uint16_t* out) {
  for (size_t g = 0; g < ngroups; ++g) {
    for (size_t p = 0; p < 32; ++p) {
      uint32_t s = 0;
      for (size_t m = 0; m < nb; ++m) {
        const uint8_t byte = codes[(g * nb + m) * 16 + (p % 16)];
        const unsigned code = p < 16 ? (byte & 0x0F) : (byte >> 4);
        s += lut[m * 16 + code];
      }
      out[g * 32 + p] = static_cast<uint16_t>(s);
    }
  }
}

void test_scan(const k::KernelTable& t) {
  const size_t kBlocks[] = {2, 4, 6, 26, 50, 258};
  const size_t kGroups[] = {1, 3, 17};
  for (size_t nb : kBlocks) {
    for (size_t ng : kGroups) {
      for (int mode = 0; mode < 4; ++mode) {
        // mode 0: random LUT values with max <= 65535 / nb; mode 1: every entry at that max
        // (sums right at the limit); mode 2: a zero padding block pair at the end; mode 3 (nb=258
        // only): 257 blocks of 255 and one zero block, so the largest sums are exactly 65535.
        const unsigned maxv = static_cast<unsigned>(std::min<size_t>(255, 65535 / nb));
        std::uniform_int_distribution<unsigned> vdist(0, maxv), bdist(0, 255);
        std::vector<uint8_t> codes_buf(ng * nb * 16 + 1), lut_buf(nb * 16 + 1);
        uint8_t* codes = codes_buf.data() + 1;  // deliberately misaligned
        uint8_t* lut = lut_buf.data() + 1;
        for (size_t i = 0; i < ng * nb * 16; ++i) codes[i] = static_cast<uint8_t>(bdist(rng()));
        for (size_t i = 0; i < nb * 16; ++i) lut[i] = static_cast<uint8_t>(mode == 1 ? maxv : vdist(rng()));
        if (mode == 2) {
          for (size_t i = (nb - 2) * 16; i < nb * 16; ++i) lut[i] = 0;
        }
        if (mode == 3) {
          if (nb != 258) continue;
          for (size_t i = 0; i < nb * 16; ++i) lut[i] = i < 16 * 131 || i >= 16 * 132 ? 255 : 0;
          for (size_t i = 0; i < 16; ++i) codes[i] = 0xFF;       // lut[m][15] = 255 for 257 blocks
          for (size_t m = 0; m < nb; ++m) codes[m * 16] = 0xFF;  // point 0 and 16 of group 0
        }
        std::vector<uint16_t> want(ng * 32), got(ng * 32 + 1, 0xBEEF);
        naive_scan(codes, ng, nb, lut, want.data());
        t.scan_lut16(codes, ng, nb, lut, got.data());
        const bool ok = std::memcmp(want.data(), got.data(), ng * 32 * sizeof(uint16_t)) == 0 &&
                        got[ng * 32] == 0xBEEF;  // nothing written past the end
        check(ok, std::string(k::level_name(t.level)) + " scan_lut16 nb=" + std::to_string(nb) +
                      " ng=" + std::to_string(ng) + " mode=" + std::to_string(mode));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// filter_scores
// ---------------------------------------------------------------------------------------------
size_t naive_filter(const uint16_t* acc, const float* bias, size_t n, float a, float b, float thr, uint32_t* idx,
                    float* score) {
  size_t k = 0;
  for (size_t i = 0; i < n; ++i) {
    volatile float s = static_cast<float>(acc[i]) * a;  // volatile: keep each step rounded
    s = s + b;
    if (bias) s = s + bias[i];
    if (s > thr) {
      idx[k] = static_cast<uint32_t>(i);
      score[k] = s;
      ++k;
    }
  }
  return k;
}

void test_filter(const k::KernelTable& t, const k::KernelTable& ref) {
  const size_t kN[] = {0, 1, 5, 7, 8, 9, 15, 16, 17, 23, 31, 33, 100, 257, 1001};
  for (size_t n : kN) {
    for (int with_bias = 0; with_bias < 2; ++with_bias) {
      // a < 0 and a > 0 (the SIMD levels skip blocks of accumulators below an integer cut when
      // a > 0 and there is no bias); sel 4: accumulators packed around the threshold's cut.
      for (int sel = 0; sel < 10; ++sel) {
        const bool up = sel >= 5;
        const int mode = sel % 5;
        std::uniform_int_distribution<unsigned> adist(0, 65535);
        std::vector<uint16_t> acc_buf(n + 1);
        uint16_t* acc = acc_buf.data() + 1;  // misaligned
        for (size_t i = 0; i < n; ++i)
          acc[i] = static_cast<uint16_t>(mode == 4 ? 40000 + adist(rng()) % 7 : adist(rng()));
        std::vector<float> bias_buf = rand_floats(n + 1, -3.0f, 3.0f);
        const float* bias = with_bias ? bias_buf.data() + 1 : nullptr;
        const float a = up ? 0.000731f : -0.000731f, b = 17.25f;
        // Thresholds: keep almost nothing / about half / almost everything / exactly one score.
        float thr;
        if (mode == 0) {
          thr = up ? 65.0f : 16.0f;
        } else if (mode == 1) {
          thr = 17.25f + a * 32768.0f;
        } else if (mode == 2) {
          thr = -1e30f;
        } else {
          thr = n > 0 ? static_cast<float>(acc[n / 2]) * a + b : 0.0f;  // strict '>' at equality
          if (n > 0 && bias) thr = thr + bias[n / 2];
        }
        std::vector<uint32_t> wi(n + 1, 0xFFFFFFFFu), si(n + 1, 0xFFFFFFFFu), vi(n + 1, 0xFFFFFFFFu);
        std::vector<float> ws(n + 1, -7.0f), ss(n + 1, -7.0f), vs(n + 1, -7.0f);
        const size_t wn = naive_filter(acc, bias, n, a, b, thr, wi.data(), ws.data());
        const size_t sn = ref.filter_scores(acc, bias, n, a, b, thr, si.data(), ss.data());
        const size_t vn = t.filter_scores(acc, bias, n, a, b, thr, vi.data(), vs.data());
        bool ok = wn == sn && sn == vn;
        // Entries >= count are unspecified (SIMD levels may store whole vectors there), but
        // nothing may be written past the n entries.
        ok = ok && std::memcmp(si.data(), vi.data(), vn * sizeof(uint32_t)) == 0;
        ok = ok && std::memcmp(ss.data(), vs.data(), vn * sizeof(float)) == 0;
        ok = ok && vi[n] == 0xFFFFFFFFu && vs[n] == -7.0f;
        ok = ok && std::memcmp(wi.data(), vi.data(), vn * sizeof(uint32_t)) == 0;
        ok = ok && std::memcmp(ws.data(), vs.data(), vn * sizeof(float)) == 0;
        check(ok, std::string(k::level_name(t.level)) + " filter_scores n=" + std::to_string(n) +
                      " bias=" + std::to_string(with_bias) + " sel=" + std::to_string(sel) +
                      " counts=" + std::to_string(wn) + "/" + std::to_string(sn) + "/" + std::to_string(vn));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// lut_blocks, lut_quantize
// ---------------------------------------------------------------------------------------------
void test_lut(const k::KernelTable& t, const k::KernelTable& ref) {
  const size_t kDpb[] = {1, 2, 3, 4, 7, 8};
  for (size_t d : kDims) {
    for (size_t dpb : kDpb) {
      for (int mode = 0; mode < 3; ++mode) {
        std::vector<float> q = rand_floats(d), ct = rand_floats(d * 16, -2.0f, 2.0f);
        if (mode == 1) {  // zero products of both signs (the sums stay +0: bounds at zero)
          for (size_t j = 0; j < d; j += 2) q[j] = (j % 4 == 0) ? 0.0f : -0.0f;
          for (size_t i = 0; i < ct.size(); i += 3) ct[i] = -0.0f;
        } else if (mode == 2) {  // a constant block: every entry equal (range 0)
          for (size_t i = 0; i < ct.size(); ++i) ct[i] = 0.5f;
        }
        const size_t M = (d + dpb - 1) / dpb;
        std::vector<float> lr(M * 16), lv(M * 16), mnr(M), mnv(M), mxr(M), mxv(M), ln(M * 16), mnn(M), mxn(M);
        ref.lut_blocks(q.data(), ct.data(), d, dpb, lr.data(), mnr.data(), mxr.data());
        t.lut_blocks(q.data(), ct.data(), d, dpb, lv.data(), mnv.data(), mxv.data());
        // Naive: the same sums, bounds by plain comparisons.
        for (size_t m = 0; m < M; ++m) {
          const size_t o = m * dpb, dm = std::min(dpb, d - o);
          float tt[16];
          for (int c = 0; c < 16; ++c) {
            volatile float a = 0.0f;
            for (size_t j = 0; j < dm; ++j) {
              volatile float p = q[o + j] * ct[(o + j) * 16 + c];
              a = a + p;
            }
            tt[c] = a;
          }
          float lo = tt[0], hi = tt[0];
          for (int c = 1; c < 16; ++c) {
            if (tt[c] < lo) lo = tt[c];
            if (tt[c] > hi) hi = tt[c];
          }
          mnn[m] = lo;
          mxn[m] = hi;
          for (int c = 0; c < 16; ++c) ln[m * 16 + c] = tt[c] - lo;
        }
        const bool ok = bits_equal(lr.data(), lv.data(), M * 16) && bits_equal(mnr.data(), mnv.data(), M) &&
                        bits_equal(mxr.data(), mxv.data(), M) && bits_equal(ln.data(), lv.data(), M * 16) &&
                        bits_equal(mnn.data(), mnv.data(), M) && bits_equal(mxn.data(), mxv.data(), M);
        check(ok, ctx(t, "lut_blocks", d) + " dpb=" + std::to_string(dpb) + " mode=" + std::to_string(mode));
      }
    }
  }
  const size_t kN[] = {0, 1, 7, 8, 9, 16, 31, 33, 1536, 1537};
  const float kScale[] = {1.0f, 0.37f, 255.0f / 3.1f, 1e6f};
  for (size_t n : kN) {
    for (float sc : kScale) {
      std::vector<float> lut = rand_floats(n, 0.0f, 300.0f / sc);
      if (n > 3) {
        lut[0] = 0.0f;
        lut[1] = 255.0f / sc;  // at and around the clamp
        lut[2] = 254.5f / sc;
        lut[3] = std::nextafter(254.5f / sc, 0.0f);
      }
      std::vector<uint8_t> br(n + 1, 0xAB), bv(n + 1, 0xAB), bn(n + 1, 0xAB);
      ref.lut_quantize(lut.data(), n, sc, br.data());
      t.lut_quantize(lut.data(), n, sc, bv.data());
      for (size_t i = 0; i < n; ++i) {
        volatile float v = lut[i] * sc;
        v = v + 0.5f;
        const float w = v < 255.0f ? static_cast<float>(v) : 255.0f;
        bn[i] = static_cast<uint8_t>(static_cast<int>(w));
      }
      const bool ok = br == bv && bn == bv;  // including the untouched byte past n
      check(ok, ctx(t, "lut_quantize", 0, n) + " s=" + std::to_string(sc));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------------------------
void test_dispatch() {
  k::SimdLevel lv;
  check(k::parse_level("scalar", &lv) && lv == k::SimdLevel::kScalar, "parse scalar");
  check(k::parse_level("avx2", &lv) && lv == k::SimdLevel::kAvx2, "parse avx2");
  check(k::parse_level("avx512", &lv) && lv == k::SimdLevel::kAvx512, "parse avx512");
  check(!k::parse_level("sse9", &lv) && !k::parse_level("", &lv), "parse unknown");
  check(std::strcmp(k::level_name(k::SimdLevel::kAvx512), "avx512") == 0 &&
            std::strcmp(k::level_name(k::SimdLevel::kAvx2), "avx2") == 0 &&
            std::strcmp(k::level_name(k::SimdLevel::kScalar), "scalar") == 0,
        "level_name");

  const k::SimdLevel best = k::best_supported_level();
  check(k::table_for(k::SimdLevel::kScalar) != nullptr, "scalar table always available");
  check(k::table_for(best) != nullptr && k::table_for(best)->level == best, "best level has a table");
  for (int l = 0; l <= 2; ++l) {
    const k::KernelTable* t = k::table_for(static_cast<k::SimdLevel>(l));
    check((t != nullptr) == (l <= static_cast<int>(best)), "table_for availability level " + std::to_string(l));
  }
  check(k::cpu_has_avx2() || !k::cpu_has_avx512(), "avx512 implies avx2");

  // The level chosen at first use honours AVQ_SIMD_LEVEL (clamped to best).
  const k::SimdLevel def = k::default_level();
  const char* env = std::getenv("AVQ_SIMD_LEVEL");
  k::SimdLevel want = best;
  if (env && k::parse_level(env, &lv) && static_cast<int>(lv) < static_cast<int>(best)) want = lv;
  check(def == want, std::string("default_level ") + k::level_name(def) + " expected " + k::level_name(want));
  check(k::active().level == def, std::string("active level ") + k::level_name(k::active().level));

  check(k::set_active_level(k::SimdLevel::kScalar) && k::active().level == k::SimdLevel::kScalar, "set scalar");
  check(k::set_active_level(best) && k::active().level == best, "set best");
  check(k::set_active_level(def), "restore default");
}

}  // namespace

// dot_t16: transposed groups of 16 rows, sequential summation over d; bit-identical to scalar
// and close to a double-precision reference.
void test_dot_t16(const k::KernelTable& t, const k::KernelTable& ref) {
  std::mt19937 rng(77);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (size_t d : {1, 2, 3, 7, 16, 17, 50, 97}) {
    for (size_t ng : {1, 2, 3, 4, 5, 9, 28}) {
      std::vector<float> q(d), ct(ng * d * 16), a(ng * 16), b(ng * 16);
      for (float& v : q) v = u(rng);
      for (float& v : ct) v = u(rng);
      t.dot_t16(q.data(), ct.data(), ng, d, a.data());
      ref.dot_t16(q.data(), ct.data(), ng, d, b.data());
      check(bits_equal(a.data(), b.data(), ng * 16), std::string(k::level_name(t.level)) + " dot_t16 bit-identical d=" +
                                                         std::to_string(d) + " ng=" + std::to_string(ng));
      bool ok = true;
      for (size_t g = 0; g < ng; ++g)
        for (size_t l = 0; l < 16; ++l) {
          double r = 0, ra = 0;
          for (size_t j = 0; j < d; ++j) {
            double p = double(q[j]) * ct[(g * d + j) * 16 + l];
            r += p;
            ra += std::fabs(p);
          }
          ok &= std::fabs(a[g * 16 + l] - r) <= 1e-5 * ra + 1e-6;
        }
      check(ok, std::string(k::level_name(t.level)) + " dot_t16 vs double d=" + std::to_string(d));
    }
  }
}

// dot_t16_i16: exact int32 sums of 16-bit products over pairs of dimensions, against a plain
// 64-bit reference, including the extreme values the coarse leaf selection uses (|q| <= 2732 at
// d_pad = 384, |x| <= 2047: the sums reach 2^31 - 1 in magnitude without overflowing).
void test_dot_t16_i16(const k::KernelTable& t) {
  std::mt19937 rng(79);
  for (size_t dp : {1, 2, 3, 8, 25, 192}) {
    for (size_t ng : {1, 2, 3, 5}) {
      for (int mode = 0; mode < 3; ++mode) {  // random; the largest positive sums; the largest negative
        const int32_t qmax = static_cast<int32_t>(std::min<int64_t>(32767, 2147483647 / (2047 * int64_t(2 * dp))));
        std::uniform_int_distribution<int32_t> uq(-qmax, qmax), ux(-2047, 2047);
        std::vector<int16_t> q(2 * dp), ct(ng * dp * 32);
        for (size_t j = 0; j < q.size(); ++j)
          q[j] = static_cast<int16_t>(mode == 0 ? uq(rng) : (mode == 1 ? qmax : -qmax));
        for (size_t j = 0; j < ct.size(); ++j) ct[j] = static_cast<int16_t>(mode == 0 ? ux(rng) : 2047);
        std::vector<int32_t> a(ng * 16, -7);
        t.dot_t16_i16(q.data(), ct.data(), ng, dp, a.data());
        bool ok = true;
        for (size_t g = 0; g < ng; ++g)
          for (size_t l = 0; l < 16; ++l) {
            int64_t r = 0;
            for (size_t i = 0; i < dp; ++i)
              for (size_t h = 0; h < 2; ++h) r += int64_t(q[2 * i + h]) * ct[((g * dp + i) * 16 + l) * 2 + h];
            ok &= r == a[g * 16 + l];
          }
        check(ok, std::string(k::level_name(t.level)) + " dot_t16_i16 exact dp=" + std::to_string(dp) +
                      " ng=" + std::to_string(ng) + " mode=" + std::to_string(mode));
      }
    }
  }
}

// dot_seq_gather: each row's sum bit-identical to that row's entry of the scalar dot_t16 (the
// leaves the coarse pass keeps are re-scored in the order the float pass uses), for every count
// of rows (blocks of 8 and the rest) and d (blocks of 8 and the tail).
void test_dot_seq_gather(const k::KernelTable& t, const k::KernelTable& ref) {
  std::mt19937 rng(80);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (size_t d : {1, 3, 8, 9, 16, 50, 97, 384}) {
    for (size_t n : {0, 1, 7, 8, 9, 16, 21}) {
      const size_t ng = (n + 15) / 16;
      std::vector<float> q(d), x(n * d), ct(std::max<size_t>(ng, 1) * d * 16, 0.f), a(n + 1, -7.f),
          b(std::max<size_t>(ng, 1) * 16);
      for (float& v : q) v = u(rng);
      for (float& v : x) v = u(rng) * 3.f;
      std::vector<const float*> rows(n);
      for (size_t i = 0; i < n; ++i) {
        rows[i] = x.data() + ((i * 5) % n) * d;  // gathered out of order
        for (size_t j = 0; j < d; ++j) ct[((i / 16) * d + j) * 16 + i % 16] = rows[i][j];
      }
      t.dot_seq_gather(q.data(), rows.data(), n, d, a.data());
      if (ng) ref.dot_t16(q.data(), ct.data(), ng, d, b.data());
      const std::string what =
          std::string(k::level_name(t.level)) + " dot_seq_gather d=" + std::to_string(d) + " n=" + std::to_string(n);
      check(bits_equal(a.data(), b.data(), n), what + " bit-identical to dot_t16");
      check(a[n] == -7.f, what + " writes only its outputs");
    }
  }
}

// dot_t16_multi: nq queries (row stride ldq) into rows of stride ldo; bit-identical to nq calls of
// the scalar dot_t16, whatever nq (blocks of 4 and the rest) and ngroups (pairs and the rest).
void test_dot_t16_multi(const k::KernelTable& t, const k::KernelTable& ref) {
  std::mt19937 rng(78);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (size_t d : {1, 3, 16, 50, 97}) {
    for (size_t ng : {1, 2, 3, 5}) {
      for (size_t nq : {1, 3, 4, 5, 8, 11}) {
        const size_t ldq = d + 3, ldo = ng * 16 + 5;
        std::vector<float> q(nq * ldq), ct(ng * d * 16), a(nq * ldo, -7.f), b(ng * 16);
        for (float& v : q) v = u(rng);
        for (float& v : ct) v = u(rng);
        t.dot_t16_multi(q.data(), nq, ldq, ct.data(), ng, d, a.data(), ldo);
        bool same = true, untouched = true;
        for (size_t p = 0; p < nq; ++p) {
          ref.dot_t16(q.data() + p * ldq, ct.data(), ng, d, b.data());
          same &= bits_equal(a.data() + p * ldo, b.data(), ng * 16);
          for (size_t i = ng * 16; i < ldo; ++i) untouched &= a[p * ldo + i] == -7.f;
        }
        const std::string what = std::string(k::level_name(t.level)) + " dot_t16_multi d=" + std::to_string(d) +
                                 " ng=" + std::to_string(ng) + " nq=" + std::to_string(nq);
        check(same, what + " bit-identical to dot_t16");
        check(untouched, what + " writes only its outputs");
      }
    }
  }
}

// partition_f32: order-keeping split, identical counts and contents at every level.
void test_partition(const k::KernelTable& t) {
  std::mt19937 rng(99);
  std::uniform_int_distribution<int> u(-20, 20);  // small integers: many ties with the pivot
  for (size_t n : {0, 1, 7, 8, 15, 16, 17, 31, 100, 337}) {
    std::vector<float> src(n);
    for (float& v : src) v = static_cast<float>(u(rng)) * 0.25f;
    for (float pivot : {-1.0f, 0.0f, 2.5f, 100.f}) {
      std::vector<float> g(n + 16), l(n + 16);
      size_t ng = 0, nl = 0;
      t.partition_f32(src.data(), n, pivot, g.data(), l.data(), &ng, &nl);
      std::vector<float> rg, rl;
      for (float v : src) {
        if (v > pivot) rg.push_back(v);
        if (v < pivot) rl.push_back(v);
      }
      bool ok = ng == rg.size() && nl == rl.size() && std::equal(rg.begin(), rg.end(), g.begin()) &&
                std::equal(rl.begin(), rl.end(), l.begin());
      check(ok, std::string(k::level_name(t.level)) + " partition_f32 n=" + std::to_string(n));
    }
  }
}

int main() {
  test_dispatch();
  std::printf("best level: %s, active level: %s\n", k::level_name(k::best_supported_level()),
              k::level_name(k::active().level));

  const k::KernelTable& ref = *k::table_for(k::SimdLevel::kScalar);
  for (int l = 0; l <= 2; ++l) {
    const k::KernelTable* t = k::table_for(static_cast<k::SimdLevel>(l));
    if (t == nullptr) {
      std::printf("level %s: not available, skipped\n", k::level_name(static_cast<k::SimdLevel>(l)));
      continue;
    }
    const int before = g_failed;
    test_float_kernels(*t, ref);
    test_scan(*t);
    test_filter(*t, ref);
    test_lut(*t, ref);
    test_dot_t16(*t, ref);
    test_dot_t16_multi(*t, ref);
    test_dot_t16_i16(*t);
    test_dot_seq_gather(*t, ref);
    test_partition(*t);
    std::printf("level %s: %s\n", k::level_name(t->level), g_failed == before ? "ok" : "FAILURES");
  }
  // The active table (whatever AVQ_SIMD_LEVEL selected) is one of the tables tested above.
  test_float_kernels(k::active(), ref);

  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
