// Merging the top-k lists of shards into one per query (avq_plugin.distributed.merge).
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>
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

// One query's list from one part: D[0..w), I[0..w), best first, id -1 for padding.
struct MergeList {
  const float* D;
  const int64_t* I;
  size_t w;
};

// Scratch of merge_lists (reused across queries).
struct MergeScratch {
  struct Entry {
    float score;
    int64_t id;
  };
  std::vector<Entry> buf;
  std::vector<std::pair<int64_t, size_t>> by_id;
  std::vector<int64_t> ids;
};

// The best k entries of n >= 1 lists of one query into D, I (k), as merge_topk_rows does for a
// query: ordered by score (higher first, lower first when `l2`), then by the smaller id; an id
// listed more than once counts once, at its best entry; padding last. One list is copied as it
// is unless `sort_single`. Only the first k entries of a list are read.
void merge_lists(const MergeList* lists, size_t n, size_t k, bool l2, bool sort_single, MergeScratch& s, float* D,
                 int64_t* I);

// D, I (nq, k): per query, the entries of the parts that answer it ordered by score (higher
// first, lower first when `l2`), then by the smaller id; an id in several parts (or twice)
// counts once, at its best entry; padding (id -1, score -FLT_MAX or +FLT_MAX for l2) last and for
// queries no part answers. A query answered by one part keeps that part's list as it is unless
// `sort_single`. Only the first k columns of a part are read. InvalidArgument for a row outside
// [0, nq).
void merge_topk_rows(const std::vector<MergePart>& parts, size_t nq, size_t k, bool l2, bool sort_single, float* D,
                     int64_t* I);

}  // namespace avq
