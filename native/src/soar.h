// SOAR spilling (Sun, Simcha, Dopson, Guo, Kumar, "SOAR: Improved Indexing for Approximate
// Nearest Neighbor Search", NeurIPS 2023): every vector is stored in its primary leaf c1 and,
// as a second copy, in the leaf c' != c1 minimising the orthogonality-amplified residual loss
//     ||x - c'||^2 + lambda * <r, x - c'>^2 / ||r||^2,    r = x - c1,
// (c: the residual centres, the cluster means). A query that scores x badly through c1 (its
// inner product with r is large) tends to find x through c', whose residual is nearly
// orthogonal to r. The copy holds the 4-bit codes of x - c' and a reference to the primary
// copy (leaf << 32 | position): the reorder vector is shared, not duplicated. Search
// de-duplicates candidates by that reference before re-scoring.
//
// The spilled copies live here, beside the index's leaves (the Index owns one SpillStore when
// IndexParams::spill is set); the Index calls into it from train/add/remove/search/io.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "kmeans.h"

namespace avq {

enum class SpillMode : uint32_t { kNone = 0, kSoar = 1 };

const char* spill_name(SpillMode m);

// Lambda of the SOAR loss: the paper's and ScaNN's default.
constexpr double kDefaultSoarLambda = 1.5;
// Largest accepted lambda (the loss is meaningful for lambda of order 1; guards overflow).
constexpr double kMaxSoarLambda = 1e6;

// Candidate references of spilled copies carry this bit in the leaf half (leaf ids < 2^31).
constexpr uint32_t kSpillLeafFlag = 0x80000000u;

struct SpillStore {
  struct List {
    uint32_t n = 0;
    // The copies' codes are the second section of the leaf's LeafCodes (codes.h, index.h).
    std::vector<int64_t> ids;
    std::vector<uint64_t> ref;  // primary copy: (leaf << 32) | position
    std::vector<float> bias;    // l2 only: -0.5 * the scan's norm term (see l2_decoded_norms)
  };
  double lambda = kDefaultSoarLambda;
  std::vector<List> lists;  // one per leaf
  size_t total = 0;         // spilled copies in all lists
  CenterTable resid_table;  // residual centres for the loss (built with the leaves)
  // id -> (leaf << 32) | position of its spilled copy; built on first need (remove), then kept.
  bool map_valid = false;
  std::unordered_map<int64_t, uint64_t> map;

  // Empties the lists (num_leaves of them) and builds the centre table from resid (L, d).
  void reset(size_t num_leaves, const float* resid, size_t d);
  void ensure_map();
  size_t memory_usage() const;

  // Chooses the spill leaf of v (prepared vector, d floats) whose primary leaf is `primary`:
  // the SOAR loss minimiser over all leaves but the primary (ties: lower id). resid: (L, d).
  // scratch: 2 * ngroups * 16 + d floats. Requires L >= 2.
  uint32_t choose(const float* v, uint32_t primary, const float* resid, size_t d, std::vector<float>& scratch) const;

  // The primary copy of id moved to (leaf, pos): updates the reference of its spilled copy.
  void repoint(int64_t id, uint32_t leaf, uint32_t pos);

  // File section "SOAR" (optional: older files have none). Payload: u32 version (1), f64 lambda,
  // u64 L (0 while untrained), then L u64 list sizes, the codes of each list (ceil(n/32) groups
  // each), the ids (i64), the primary references (u64) and, for l2, the biases (f32), each
  // array list by list.
  // codes[l]: list l's codes.
  std::string serialize(const std::vector<const uint8_t*>& codes, size_t group_bytes, bool l2) const;
  // Reads only the lambda (before the Index exists).
  static double read_lambda(const uint8_t* data, size_t size);
};

}  // namespace avq
