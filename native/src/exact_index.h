// Exact brute-force index with the same contract as Index: the recall oracle of the tests and
// of users checking their own recall (hnswlib's BFIndex pattern).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "index.h"

namespace avq {

class ExactIndex {
 public:
  ExactIndex(Metric metric, uint32_t d);
  // ids nullptr: max existing id + 1 onwards. Throws InvalidArgument on duplicates.
  void add(const float* x, size_t n, const int64_t* ids);
  size_t remove(const int64_t* ids, size_t n);
  void reset();
  // Same output contract as Index::search (scores in the metric's units, best first, padded).
  void search(const float* q, size_t nq, size_t k, int nthreads, float* D, int64_t* I) const;
  size_t ntotal() const;
  Metric metric() const { return metric_; }
  uint32_t d() const { return d_; }
  size_t memory_usage() const;
  std::vector<int64_t> all_ids() const;
  std::string serialize() const;
  static std::unique_ptr<ExactIndex> deserialize(const uint8_t* data, size_t size);

 private:
  Metric metric_;
  uint32_t d_;
  std::vector<float> vecs_;  // (n, d), normalised for cosine
  std::vector<int64_t> ids_;
  std::unordered_map<int64_t, size_t> pos_;
  int64_t next_id_ = 0;
  mutable std::shared_mutex mu_;
};

}  // namespace avq
