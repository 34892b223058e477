// Per-thread scratch of a search (search.cpp, faiss_import.cpp): not part of the interface.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "index.h"
#include "top_k.h"

namespace avq {

struct Index::Scratch {
  std::vector<float> q, leaf_scores, lut, exact, w;
  float q_unscale = 1.f;  // dot: the prepared query is q / q_unscale (a power of two)
  std::vector<uint32_t> idx;
  std::vector<std::pair<float, uint32_t>> leaf_sel;
  std::vector<uint64_t> keys;
  std::vector<uint8_t> lut8;
  std::vector<uint16_t> acc;
  std::vector<float> sc;
  std::vector<const float*> rows;
  std::vector<const int8_t*> rows8;
  std::vector<const uint16_t*> rows16;
  std::vector<uint64_t> seen;    // SOAR: de-duplication hash set of primary references
  std::vector<topk::Cand> ties;  // candidates tied at a cut (SOAR de-duplication, final top k)
  // coarse leaf selection: lower bounds, their selection scratch, the kept leaves and their scores,
  // the groups of overlapping intervals and the keys of one group
  std::vector<float> lo, lo_tmp, cand_score, approx, bound;
  std::vector<int16_t> q16;
  std::vector<int32_t> isc;
  std::vector<uint32_t> cand_leaf, group_end;
  std::vector<uint64_t> group_keys;
  std::vector<const float*> cand_rows;
  // the probed leaves' <q, mean> (the scan's bias), computed together
  std::vector<float> leaf_bias;
  std::vector<float> blk_mn, blk_mx;  // per block: the query's LUT bounds
  std::vector<const float*> bias_rows;
  topk::TopN topn;
  const int32_t* given_leaves = nullptr;  // search_leaves: the leaves to scan instead of selecting
  float leaf_margin = -1.f;               // search(): its leaf_margin (negative: off)
  size_t given_n = 0;
  // search_leaves_multi: one query searched in several shards with the same quantizer. With
  // share_query, the first shard's prepared query (q, q_unscale) and lookup table (lut8,
  // lut_offset, lut_inv_scale) are kept for the others (query_ready, lut_ready).
  bool share_query = false, query_ready = false, lut_ready = false;
  double lut_offset = 0;
  float lut_inv_scale = 1.f;
  size_t footprint() const {
    return (q.capacity() + leaf_scores.capacity() + lut.capacity() + exact.capacity() + w.capacity() + sc.capacity() +
            lo.capacity() + lo_tmp.capacity() + cand_score.capacity() + approx.capacity() + bound.capacity() +
            leaf_bias.capacity() + blk_mn.capacity() + blk_mx.capacity()) *
               sizeof(float) +
           (idx.capacity() + cand_leaf.capacity() + group_end.capacity() + isc.capacity()) * sizeof(uint32_t) +
           (cand_rows.capacity() + bias_rows.capacity()) * sizeof(void*) + q16.capacity() * sizeof(int16_t) +
           leaf_sel.capacity() * sizeof(leaf_sel[0]) +
           (keys.capacity() + group_keys.capacity() + seen.capacity()) * sizeof(uint64_t) + lut8.capacity() +
           acc.capacity() * sizeof(uint16_t) + ties.capacity() * sizeof(topk::Cand) +
           (rows.capacity() + rows8.capacity() + rows16.capacity()) * sizeof(void*) + topn.footprint();
  }
};

}  // namespace avq
