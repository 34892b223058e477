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
  struct Ref {
    uint32_t part;
    size_t row;
  };
  std::vector<Ref> refs(total);
  {
    std::vector<size_t> next(start.begin(), start.end() - 1);
    for (size_t j = 0; j < parts.size(); ++j)
      for (size_t r = 0; r < parts[j].n; ++r) refs[next[size_t(parts[j].rows[r])]++] = {uint32_t(j), r};
  }
  struct Entry {
    float score;
    int64_t id;
  };
  std::vector<Entry> buf;
  std::vector<std::pair<int64_t, size_t>> by_id;
  std::vector<int64_t> ids;
  auto better = [l2](const Entry& a, const Entry& b) {
    if (a.score != b.score) return l2 ? a.score < b.score : a.score > b.score;
    return a.id < b.id;
  };
  for (size_t q = 0; q < nq; ++q) {
    const size_t a = start[q], b = start[q + 1];
    float* Dq = D + q * k;
    int64_t* Iq = I + q * k;
    if (a == b) continue;
    if (b - a == 1 && !sort_single) {  // one part: its list as it is
      const MergePart& p = parts[refs[a].part];
      const size_t w = std::min(k, p.w);
      std::copy(p.D + refs[a].row * p.w, p.D + refs[a].row * p.w + w, Dq);
      std::copy(p.I + refs[a].row * p.w, p.I + refs[a].row * p.w + w, Iq);
      continue;
    }
    buf.clear();
    for (size_t e = a; e < b; ++e) {
      const MergePart& p = parts[refs[e].part];
      const size_t w = std::min(k, p.w);
      const float* d = p.D + refs[e].row * p.w;
      const int64_t* i = p.I + refs[e].row * p.w;
      for (size_t c = 0; c < w; ++c)
        if (i[c] >= 0) buf.push_back({d[c], i[c]});
    }
    // The best k first (a partial sort); all of them only when an id comes twice among those.
    const size_t m = std::min(k, buf.size());
    std::partial_sort(buf.begin(), buf.begin() + m, buf.end(), better);
    bool repeated = false;
    if (m <= kLinearDedup) {
      for (size_t e = 1; e < m && !repeated; ++e)
        for (size_t f = 0; f < e; ++f) repeated |= buf[e].id == buf[f].id;
    } else {
      ids.resize(m);
      for (size_t e = 0; e < m; ++e) ids[e] = buf[e].id;
      std::sort(ids.begin(), ids.end());
      repeated = std::adjacent_find(ids.begin(), ids.end()) != ids.end();
    }
    if (repeated) {
      std::sort(buf.begin() + m, buf.end(), better);
      // An id listed more than once keeps its first (best) entry: the later ones are dropped.
      by_id.resize(buf.size());
      for (size_t e = 0; e < buf.size(); ++e) by_id[e] = {buf[e].id, e};
      std::sort(by_id.begin(), by_id.end());
      for (size_t e = 1, first = 0; e < by_id.size(); ++e) {
        if (by_id[e].first == by_id[first].first)
          buf[by_id[e].second].id = -1;
        else
          first = e;
      }
    }
    size_t out = 0;
    for (size_t e = 0; e < buf.size() && out < k; ++e) {
      if (buf[e].id < 0) continue;
      Dq[out] = buf[e].score;
      Iq[out] = buf[e].id;
      ++out;
    }
  }
}

}  // namespace avq
