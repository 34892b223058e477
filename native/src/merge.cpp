// Merging shards' top-k lists (merge.h): one pass to group the parts' rows by query, then per
// query a sort of its few entries (visited shards x k), never a dense (queries x all parts)
// matrix.
#include "merge.h"

#include <algorithm>
#include <limits>
#include <string>
#include <utility>

#include "common.h"

namespace avq {

// Up to this many results, repeated ids among the best are looked for pairwise, beyond by a sort.
constexpr size_t kLinearDedup = 32;

void merge_lists(const MergeList* lists, size_t n, size_t k, bool l2, bool sort_single, MergeScratch& s, float* D,
                 int64_t* I) {
  const float pad = l2 ? std::numeric_limits<float>::max() : -std::numeric_limits<float>::max();
  std::fill(D, D + k, pad);
  std::fill(I, I + k, int64_t(-1));
  if (n == 1 && !sort_single) {  // one list: as it is
    const size_t w = std::min(k, lists[0].w);
    std::copy(lists[0].D, lists[0].D + w, D);
    std::copy(lists[0].I, lists[0].I + w, I);
    return;
  }
  auto& buf = s.buf;
  buf.clear();
  for (size_t e = 0; e < n; ++e) {
    const size_t w = std::min(k, lists[e].w);
    for (size_t c = 0; c < w; ++c)
      if (lists[e].I[c] >= 0) buf.push_back({lists[e].D[c], lists[e].I[c]});
  }
  auto better = [l2](const MergeScratch::Entry& a, const MergeScratch::Entry& b) {
    if (a.score != b.score) return l2 ? a.score < b.score : a.score > b.score;
    return a.id < b.id;
  };
  // The best k first (a partial sort); all of them only when an id comes twice among those.
  const size_t m = std::min(k, buf.size());
  std::partial_sort(buf.begin(), buf.begin() + m, buf.end(), better);
  bool repeated = false;
  if (m <= kLinearDedup) {
    for (size_t e = 1; e < m && !repeated; ++e)
      for (size_t f = 0; f < e; ++f) repeated |= buf[e].id == buf[f].id;
  } else {
    s.ids.resize(m);
    for (size_t e = 0; e < m; ++e) s.ids[e] = buf[e].id;
    std::sort(s.ids.begin(), s.ids.end());
    repeated = std::adjacent_find(s.ids.begin(), s.ids.end()) != s.ids.end();
  }
  if (repeated) {
    std::sort(buf.begin() + m, buf.end(), better);
    // An id listed more than once keeps its first (best) entry: the later ones are dropped.
    s.by_id.resize(buf.size());
    for (size_t e = 0; e < buf.size(); ++e) s.by_id[e] = {buf[e].id, e};
    std::sort(s.by_id.begin(), s.by_id.end());
    for (size_t e = 1, first = 0; e < s.by_id.size(); ++e) {
      if (s.by_id[e].first == s.by_id[first].first)
        buf[s.by_id[e].second].id = -1;
      else
        first = e;
    }
  }
  size_t out = 0;
  for (size_t e = 0; e < buf.size() && out < k; ++e) {
    if (buf[e].id < 0) continue;
    D[out] = buf[e].score;
    I[out] = buf[e].id;
    ++out;
  }
}

void merge_topk_rows(const std::vector<MergePart>& parts, size_t nq, size_t k, bool l2, bool sort_single, float* D,
                     int64_t* I) {
  const float pad = l2 ? std::numeric_limits<float>::max() : -std::numeric_limits<float>::max();
  std::fill(D, D + nq * k, pad);
  std::fill(I, I + nq * k, int64_t(-1));
  // Rows of every part grouped by query (counting sort): start[q] .. start[q + 1] in `refs`.
  std::vector<size_t> start(nq + 1, 0);
  size_t total = 0;
  for (const MergePart& p : parts) {
    for (size_t r = 0; r < p.n; ++r) {
      const int64_t q = p.rows[r];
      if (q < 0 || static_cast<uint64_t>(q) >= nq)
        throw InvalidArgument("row " + std::to_string(q) + " is outside [0, " + std::to_string(nq) + ")");
      ++start[size_t(q) + 1];
    }
    total += p.n;
  }
  for (size_t q = 0; q < nq; ++q) start[q + 1] += start[q];
  std::vector<MergeList> refs(total);
  {
    std::vector<size_t> next(start.begin(), start.end() - 1);
    for (const MergePart& p : parts)
      for (size_t r = 0; r < p.n; ++r) refs[next[size_t(p.rows[r])]++] = {p.D + r * p.w, p.I + r * p.w, p.w};
  }
  MergeScratch s;
  for (size_t q = 0; q < nq; ++q)
    if (start[q + 1] > start[q])
      merge_lists(refs.data() + start[q], start[q + 1] - start[q], k, l2, sort_single, s, D + q * k, I + q * k);
}

}  // namespace avq
