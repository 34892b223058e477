// Merging the top-k lists of shards into one per query (avq_plugin.distributed.merge).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace avq {

// One shard's answers: rows[0..n) are the query numbers it answers, D and I (n, w) their lists,
// best first, id -1 for padding.
struct MergePart {
  const int64_t* rows;
  size_t n;
  const float* D;
  const int64_t* I;
  size_t w;
};

// D, I (nq, k): per query, the entries of the parts that answer it ordered by score (higher
// first, lower first when `l2`), then by the smaller id; an id in several parts (or twice)
// counts once, at its best entry; padding (id -1, score -FLT_MAX or +FLT_MAX for l2) last and for
// queries no part answers. A query answered by one part keeps that part's list as it is unless
// `sort_single`. Only the first k columns of a part are read. InvalidArgument for a row outside
// [0, nq).
void merge_topk_rows(const std::vector<MergePart>& parts, size_t nq, size_t k, bool l2, bool sort_single, float* D,
                     int64_t* I);

}  // namespace avq
