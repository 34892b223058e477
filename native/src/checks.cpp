#include "checks.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>

namespace avq {

namespace {
std::string fmt_g(double v) {
  char b[32];
  std::snprintf(b, sizeof b, "%.3g", v);
  return std::string(b);
}
}  // namespace

void check_vectors(const float* x, size_t n, size_t d, Metric metric, const char* what) {
  const bool scale_free = metric == Metric::kCosine;
  const float max_abs = static_cast<float>(limits::kMaxAbsValue);
  for (size_t i = 0; i < n; ++i) {
    const float* xi = x + i * d;
    // The largest |value| as bits (sign cleared: non-negative floats, NaN and inf above every
    // finite one, order as unsigned integers): an integer maximum the compiler vectorises. A
    // query is checked on every search, so this runs per query.
    uint32_t mb = 0;
    for (size_t j = 0; j < d; ++j) {
      uint32_t u;
      std::memcpy(&u, xi + j, 4);
      mb = std::max(mb, u & 0x7FFFFFFFu);
    }
    const bool finite = mb < 0x7F800000u;
    float mx;
    std::memcpy(&mx, &mb, 4);
    if (!finite) throw InvalidArgument(std::string(what) + " " + std::to_string(i) + " contains NaN or infinity");
    if (scale_free) {
      if (mx == 0)
        throw InvalidArgument(std::string(what) + " " + std::to_string(i) +
                              " is a zero vector, which has no direction under cosine");
    } else if (mx > max_abs) {
      throw InvalidArgument(std::string(what) + " " + std::to_string(i) + " has a value of magnitude " + fmt_g(mx) +
                            ", outside the supported range of metric '" + metric_name(metric) +
                            "': |value| <= " + fmt_g(limits::kMaxAbsValue) +
                            " (scale the data, or use metric='cosine', which accepts any finite values)");
    }
  }
}

void check_data_scale(const float* x, size_t n, size_t d, Metric metric) {
  if (metric == Metric::kCosine) return;
  double best = 0;
  for (size_t i = 0; i < n; ++i) best = std::max(best, norm_of(x + i * d, d));
  if (best > 0 && best < limits::kMinDataNorm)
    throw InvalidArgument("X: the largest vector norm is " + fmt_g(best) + ", outside the supported range of metric '" +
                          metric_name(metric) +
                          "': training data needs vectors of norm >= " + fmt_g(limits::kMinDataNorm) +
                          " (its squared norms and inner products would be subnormal floats; scale the data, "
                          "or use metric='cosine', which accepts any finite values)");
}

}  // namespace avq
