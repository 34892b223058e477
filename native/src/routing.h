// The work of a leaf-routed search (avq_plugin.distributed.placement.route_queries): which shard
// scans which leaves for which queries, and the re-ranking budget each gets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace avq {

// One shard's part of a routed search: the queries that probe one of its leaves.
struct RoutedShard {
  std::vector<int64_t> rows;     // query numbers, increasing
  size_t width = 0;              // the most leaves one of these queries probes here
  std::vector<int32_t> leaves;   // every row's leaves here in probe order, row after row
  std::vector<int64_t> offsets;  // (rows + 1,): row r's leaves are leaves[offsets[r], offsets[r + 1])
  std::vector<int64_t> budget;   // (rows,): re-ranking budgets
  std::vector<int64_t> scanned;  // (rows,): candidates each row scans here
  int64_t scanned_sum = 0;
};

struct Routing {
  std::vector<RoutedShard> shards;  // (n_shards,); a shard no query visits has no rows (offsets {0})
  std::vector<int32_t> visited;     // (nq,): shards each query visits
  std::vector<int64_t> total;       // (nq,): candidates each query scans over all its leaves
};

// P (nq, w): every query's probed leaves, best first, -1 for none; leaf_to_shard and leaf_sizes
// (L,): the owning shard and the vector count of each leaf.
//
// The re-ranking budget of a query (reorder_k) is split over the shards it visits by the weight
// of each probed leaf: its vector count divided by its rank in the probe order + 1 (the best
// candidates concentrate in the best-ranked leaves; on GloVe-190k, 20 leaves probed and
// reorder_k = 100, this keeps recall@10 within 0.005 of one index at equal total re-ranking work
// for 8 and 16 shards, where weighting by counts alone lost 0.01 to 0.02). A shard gets
// max(1, ceil(reorder_k * its weight / the query's weight)) (the weights summed in probe order;
// a share of 1 when the query's weight is 0); when reorder_k is at least the query's candidates
// (one index would re-rank all of them), every shard gets reorder_k, which keeps the routed
// search exact. InvalidArgument for a leaf outside [-1, L), an owner outside [0, n_shards), a
// size outside [0, 2^32], w > L, n_shards outside [1, L] or reorder_k outside [1, kMaxReorderK].
// reorder_k: n_budgets values, one for every query (n_budgets = nq) or one for all (1).
Routing route_queries(const int32_t* P, size_t nq, size_t w, const int32_t* leaf_to_shard, const int64_t* leaf_sizes,
                      size_t L, size_t n_shards, const int64_t* reorder_k, size_t n_budgets);

}  // namespace avq
