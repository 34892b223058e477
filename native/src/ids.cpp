// Ids: the checks shared by both index types and the loader (ids.h), and the id map of Index
// (id -> leaf and position, built on first use) with the lookups by id.
#include "ids.h"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>

#include "codes.h"
#include "common.h"
#include "index.h"

namespace avq {

std::vector<int64_t> new_ids_for_add(const int64_t* ids, size_t n, int64_t next_id,
                                     const std::function<bool(int64_t)>& present) {
  std::vector<int64_t> new_ids(n);
  if (ids) {
    std::memcpy(new_ids.data(), ids, n * sizeof(int64_t));
    for (int64_t id : new_ids)
      if (is_reserved_id(id))
        throw InvalidArgument("ids contains " + std::to_string(id) +
                              ", which is reserved (-1 pads search results; INT64_MIN is reserved with it)");
    std::vector<int64_t> sorted(new_ids);
    std::sort(sorted.begin(), sorted.end());
    for (size_t i = 1; i < n; ++i)
      if (sorted[i] == sorted[i - 1]) throw InvalidArgument("duplicate id " + std::to_string(sorted[i]) + " in ids");
    for (int64_t id : new_ids)
      if (present(id)) throw InvalidArgument("id " + std::to_string(id) + " is already in the index");
  } else {
    // Automatic ids next_id .. next_id + n - 1 stay below INT64_MAX (beyond, they would wrap;
    // INT64_MAX itself is the saturated next id, so it can only be given explicitly).
    if (n > uint64_t(std::numeric_limits<int64_t>::max()) || next_id > std::numeric_limits<int64_t>::max() - int64_t(n))
      throw InvalidArgument("automatic ids exhausted: the next id is " + std::to_string(next_id) + " and " +
                            std::to_string(n) + " are needed (pass ids explicitly)");
    for (size_t i = 0; i < n; ++i) new_ids[i] = next_id + int64_t(i);
  }
  return new_ids;
}

void check_stored_ids(const int64_t* ids, size_t n, int64_t next_id) {
  if (next_id < 0) throw InvalidArgument("corrupted index file: negative next id");
  for (size_t i = 0; i < n; ++i) {
    if (is_reserved_id(ids[i])) throw InvalidArgument("corrupted index file: reserved id " + std::to_string(ids[i]));
    if (ids[i] >= next_id && next_id != std::numeric_limits<int64_t>::max())
      throw InvalidArgument("corrupted index file: id beyond the recorded next id");
  }
  std::vector<int64_t> sorted(ids, ids + n);
  std::sort(sorted.begin(), sorted.end());
  if (std::adjacent_find(sorted.begin(), sorted.end()) != sorted.end())
    throw InvalidArgument("corrupted index file: duplicate id");
}

void Index::ensure_id_map() const {
  std::lock_guard<std::mutex> lock(id_map_mu_);
  if (id_map_valid_) return;
  id_map_.clear();
  id_map_.reserve(ntotal_);
  for (size_t l = 0; l < leaves_.size(); ++l)
    for (uint32_t i = 0; i < leaves_[l].n; ++i) id_map_[leaves_[l].ids_p[i]] = (uint64_t(l) << 32) | i;
  id_map_valid_ = true;
}

// The ids of n vectors about to be added: the given ones (checked: no duplicates among them
// or with the index) or max existing id + 1 onwards. Caller holds the exclusive lock.
std::vector<int64_t> Index::checked_new_ids(const int64_t* ids, size_t n) {
  if (ids && ntotal_ > 0) ensure_id_map();
  return new_ids_for_add(ids, n, next_id_, [&](int64_t id) { return ntotal_ > 0 && id_map_.count(id) != 0; });
}

std::vector<int64_t> Index::all_ids() const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<int64_t> out;
  out.reserve(ntotal_);
  for (const Leaf& l : leaves_) out.insert(out.end(), l.ids_p, l.ids_p + l.n);
  return out;
}

void Index::get_codes(const int64_t* ids, size_t n, uint8_t* out) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  ensure_id_map();
  const size_t M = layout_.num_blocks, gb = group_bytes();
  for (size_t t = 0; t < n; ++t) {
    auto it = id_map_.find(ids[t]);
    if (it == id_map_.end()) throw InvalidArgument("unknown id " + std::to_string(ids[t]));
    const Leaf& l = leaves_[it->second >> 32];
    size_t pos = it->second & 0xFFFFFFFFu;
    const uint8_t* g = l.codes_p + (pos / 32) * gb;
    for (size_t m = 0; m < M; ++m) out[t * M + m] = get_nibble(g, m, pos % 32);
  }
}

void Index::contains(const int64_t* ids, size_t n, uint8_t* out) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  ensure_id_map();
  for (size_t t = 0; t < n; ++t) out[t] = id_map_.count(ids[t]) ? 1 : 0;
}

void Index::get_leaves(const int64_t* ids, size_t n, int64_t* out) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  ensure_id_map();
  for (size_t t = 0; t < n; ++t) {
    auto it = id_map_.find(ids[t]);
    if (it == id_map_.end()) throw InvalidArgument("unknown id " + std::to_string(ids[t]));
    out[t] = int64_t(it->second >> 32);
  }
}

}  // namespace avq
