// Ids of stored vectors: the reserved values, the ids of an add, and the check of stored ids
// (both index types and the file loader).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

namespace avq {

// Ids: -1 is the padding of search results and INT64_MIN is reserved with it (Faiss's
// convention of negative sentinels); neither may be added nor read from a file.
inline bool is_reserved_id(int64_t id) {
  return id == -1 || id == std::numeric_limits<int64_t>::min();
}
// The ids of n vectors about to be added to an index whose next automatic id is next_id:
// the given ones (checked: none reserved, no duplicates among them; `present` tells whether an
// id is already in the index) or next_id onwards (throws when the id space is exhausted).
std::vector<int64_t> new_ids_for_add(const int64_t* ids, size_t n, int64_t next_id,
                                     const std::function<bool(int64_t)>& present);
// The next automatic id after `id` was added.
inline int64_t next_id_after(int64_t next_id, int64_t id) {
  return std::max(next_id, id == std::numeric_limits<int64_t>::max() ? id : id + 1);
}
// Ids read from a file: none reserved, no duplicates, all below next_id (unless next_id is the
// largest id), next_id >= 0. Throws InvalidArgument("corrupted index file: ...").
void check_stored_ids(const int64_t* ids, size_t n, int64_t next_id);

}  // namespace avq
