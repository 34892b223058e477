#include "routing.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "common.h"

namespace avq {

namespace {
constexpr int64_t kMaxLeafSize = int64_t(1) << 32;
}

Routing route_queries(const int32_t* P, size_t nq, size_t w, const int32_t* leaf_to_shard, const int64_t* leaf_sizes,
                      size_t L, size_t n_shards, const int64_t* reorder_k_of, size_t n_budgets) {
  if (n_shards == 0 || n_shards > L) throw InvalidArgument("n_shards must be in [1, num_leaves]");
  if (n_budgets != 1 && n_budgets != nq) throw InvalidArgument("reorder_k must be one value or one per query");
  for (size_t i = 0; i < n_budgets; ++i)
    if (reorder_k_of[i] < 1 || static_cast<uint64_t>(reorder_k_of[i]) > limits::kMaxReorderK)
      throw InvalidArgument("reorder_k must be in [1, " + std::to_string(limits::kMaxReorderK) + "]");
  if (w > L) throw InvalidArgument("more probed leaves per query than leaves");
  for (size_t l = 0; l < L; ++l) {
    if (leaf_to_shard[l] < 0 || static_cast<uint64_t>(leaf_to_shard[l]) >= n_shards)
      throw InvalidArgument("leaf " + std::to_string(l) + " belongs to no shard in [0, " + std::to_string(n_shards) +
                            ")");
    // (bounded so that a query's sum over at most L <= 2^31 leaves fits in int64)
    if (leaf_sizes[l] < 0 || leaf_sizes[l] > kMaxLeafSize)
      throw InvalidArgument("leaf " + std::to_string(l) + " has a size outside [0, 2^32]");
  }
  for (size_t t = 0; t < nq * w; ++t)
    if (P[t] < -1 || P[t] >= static_cast<int64_t>(L))
      throw InvalidArgument("leaf " + std::to_string(P[t]) + " is out of range (query " + std::to_string(t / w) + ")");

  Routing out;
  out.shards.resize(n_shards);
  out.visited.assign(nq, 0);
  out.total.assign(nq, 0);
  // Pass 1: rows, leaves and width of every shard. last[s]: the last query counted in shard s (+1).
  std::vector<size_t> last(n_shards, 0), count(n_shards, 0), nrows(n_shards, 0), nleaves(n_shards, 0);
  std::vector<size_t> touched;
  for (size_t i = 0; i < nq; ++i) {
    const int32_t* p = P + i * w;
    touched.clear();
    for (size_t j = 0; j < w; ++j) {
      if (p[j] < 0) continue;
      const size_t s = static_cast<size_t>(leaf_to_shard[p[j]]);
      if (last[s] != i + 1) {
        last[s] = i + 1;
        count[s] = 0;
        touched.push_back(s);
      }
      ++count[s];
      ++nleaves[s];
    }
    for (size_t s : touched) {
      ++nrows[s];
      out.shards[s].width = std::max(out.shards[s].width, count[s]);
    }
    out.visited[i] = static_cast<int32_t>(touched.size());
  }
  for (size_t s = 0; s < n_shards; ++s) {
    RoutedShard& r = out.shards[s];
    r.rows.resize(nrows[s]);
    r.leaves.resize(nleaves[s]);
    r.offsets.assign(nrows[s] + 1, 0);
    r.budget.resize(nrows[s]);
    r.scanned.resize(nrows[s]);
  }
  // Pass 2: fill. fill[s]: rows of shard s written; col[s]: leaves of shard s written.
  std::vector<size_t> fill(n_shards, 0), col(n_shards, 0);
  std::vector<double> weight(n_shards, 0.0);
  std::vector<int64_t> scanned(n_shards, 0);
  std::fill(last.begin(), last.end(), 0);
  for (size_t i = 0; i < nq; ++i) {
    const int64_t reorder_k = reorder_k_of[n_budgets == 1 ? 0 : i];
    const double rk = static_cast<double>(reorder_k);
    const int32_t* p = P + i * w;
    touched.clear();
    int64_t total = 0;
    double total_weight = 0.0;
    for (size_t j = 0; j < w; ++j) {
      if (p[j] < 0) continue;
      const size_t s = static_cast<size_t>(leaf_to_shard[p[j]]);
      if (last[s] != i + 1) {
        last[s] = i + 1;
        weight[s] = 0.0;
        scanned[s] = 0;
        touched.push_back(s);
      }
      const int64_t size = leaf_sizes[p[j]];
      const double wt = static_cast<double>(size) / static_cast<double>(j + 1);
      RoutedShard& r = out.shards[s];
      r.leaves[col[s]++] = p[j];
      weight[s] += wt;
      scanned[s] += size;
      total += size;
      total_weight += wt;
    }
    out.total[i] = total;
    for (size_t s : touched) {
      RoutedShard& r = out.shards[s];
      const size_t at = fill[s]++;
      r.rows[at] = static_cast<int64_t>(i);
      r.offsets[at + 1] = static_cast<int64_t>(col[s]);
      r.scanned[at] = scanned[s];
      r.scanned_sum += scanned[s];
      if (total <= reorder_k) {
        r.budget[at] = reorder_k;
      } else {
        const double share = total_weight > 0 ? weight[s] / total_weight : 1.0;
        r.budget[at] = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(rk * share - 1e-9)));
      }
    }
  }
  return out;
}

}  // namespace avq
