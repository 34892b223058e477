// The accepted values of vectors (data, queries, stored vectors), one rule for every index type
// and every path (the index, the exact index and the file loader).
#pragma once

#include <cmath>
#include <cstddef>

#include "index.h"

namespace avq {

// Under dot and l2 every |value| <= limits::kMaxAbsValue; finite; under cosine nonzero. Throws
// InvalidArgument naming `what` and the row ("<what> <row> ...").
void check_vectors(const float* x, size_t n, size_t d, Metric metric, const char* what);
// Training data of an AVQ index under dot and l2: its largest norm is 0 or >= limits::kMinDataNorm.
void check_data_scale(const float* x, size_t n, size_t d, Metric metric);

// The Euclidean norm of x (d values), summed in double.
inline double norm_of(const float* x, size_t d) {
  double s = 0;
  for (size_t j = 0; j < d; ++j) s += double(x[j]) * x[j];
  return std::sqrt(s);
}

}  // namespace avq
