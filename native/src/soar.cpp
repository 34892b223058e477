// SOAR spilling: the spill store and the Index's spill hooks (see soar.h).
#include "soar.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <unordered_map>

#include "codes.h"
#include "index.h"
#include "io.h"

namespace avq {

namespace {

constexpr uint32_t kSoarSectionVersion = 1;

}  // namespace

const char* spill_name(SpillMode m) {
  switch (m) {
    case SpillMode::kNone:
      return "none";
    case SpillMode::kSoar:
      return "soar";
  }
  return "?";
}

void SpillStore::reset(size_t num_leaves, const float* resid, size_t d) {
  std::vector<List>(num_leaves).swap(lists);
  total = 0;
  std::unordered_map<int64_t, uint64_t>().swap(map);
  map_valid = false;
  if (num_leaves) resid_table.build(resid, num_leaves, d);
}

void SpillStore::ensure_map() {
  if (map_valid) return;
  map.clear();
  map.reserve(total);
  for (size_t l = 0; l < lists.size(); ++l)
    for (uint32_t i = 0; i < lists[l].n; ++i) map[lists[l].ids[i]] = (uint64_t(l) << 32) | i;
  map_valid = true;
}

size_t SpillStore::memory_usage() const {
  size_t b =
      sizeof(SpillStore) + resid_table.t.capacity() * sizeof(float) + resid_table.norm2.capacity() * sizeof(float);
  for (const List& l : lists)
    b += sizeof(List) + l.ids.capacity() * sizeof(int64_t) + l.ref.capacity() * sizeof(uint64_t) +
         l.bias.capacity() * sizeof(float);  // the codes are counted with the leaves'
  if (map_valid) b += map.bucket_count() * sizeof(void*) + map.size() * 32;
  return b;
}

uint32_t SpillStore::choose(const float* v, uint32_t primary, const float* resid, size_t d,
                            std::vector<float>& scratch) const {
  const size_t L = lists.size(), G = resid_table.ngroups * 16;
  scratch.resize(2 * G + d);
  float* s_v = scratch.data();        // 2 <v, c> - ||c||^2 = ||v||^2 - ||v - c||^2
  float* s_r = scratch.data() + G;    // <r, c>
  float* r = scratch.data() + 2 * G;  // r = v - c1
  const float* c1 = resid + size_t(primary) * d;
  double rn2 = 0, rv = 0;
  for (size_t j = 0; j < d; ++j) {
    r[j] = v[j] - c1[j];
    rn2 += double(r[j]) * r[j];
    rv += double(r[j]) * v[j];
  }
  resid_table.score(v, false, s_v);
  const bool amplify = rn2 > 0 && lambda > 0;
  if (amplify) resid_table.score(r, true, s_r);
  const double w = amplify ? lambda / rn2 : 0.0;
  // loss(c) - ||v||^2 = -s_v[c] + w * (<r, v> - <r, c>)^2
  uint32_t best = primary == 0 ? 1 : 0;
  double best_loss = std::numeric_limits<double>::infinity();
  for (uint32_t c = 0; c < L; ++c) {
    if (c == primary) continue;
    double par = amplify ? rv - double(s_r[c]) : 0.0;
    double loss = -double(s_v[c]) + w * par * par;
    if (loss < best_loss) {
      best_loss = loss;
      best = c;
    }
  }
  return best;
}

void SpillStore::repoint(int64_t id, uint32_t leaf, uint32_t pos) {
  ensure_map();
  auto it = map.find(id);
  if (it == map.end()) return;
  lists[it->second >> 32].ref[it->second & 0xFFFFFFFFu] = (uint64_t(leaf) << 32) | pos;
}

std::string SpillStore::serialize(const std::vector<const uint8_t*>& codes, size_t gb, bool l2) const {
  ByteWriter w;
  w.put<uint32_t>(kSoarSectionVersion);
  w.put<double>(lambda);
  w.put<uint64_t>(lists.size());
  for (const List& l : lists) w.put<uint64_t>(l.n);
  std::string s = w.take();
  for (size_t l = 0; l < lists.size(); ++l)
    s.append(reinterpret_cast<const char*>(codes[l]), ((lists[l].n + 31) / 32) * gb);
  for (const List& l : lists) s.append(reinterpret_cast<const char*>(l.ids.data()), l.n * sizeof(int64_t));
  for (const List& l : lists) s.append(reinterpret_cast<const char*>(l.ref.data()), l.n * sizeof(uint64_t));
  if (l2)
    for (const List& l : lists) s.append(reinterpret_cast<const char*>(l.bias.data()), l.n * sizeof(float));
  return s;
}

double SpillStore::read_lambda(const uint8_t* data, size_t size) {
  ByteReader r(SectionView{data, size}, "SOAR");
  if (r.get<uint32_t>() != kSoarSectionVersion) throw InvalidArgument("corrupted index file: unknown SOAR version");
  const double lambda = r.get<double>();
  if (!(lambda >= 0 && lambda <= kMaxSoarLambda)) throw InvalidArgument("corrupted index file: invalid SOAR lambda");
  return lambda;
}

// ------------------------------------------------------------------------- Index's spill hooks

void Index::spill_remove(int64_t id) {
  // The last copy of the list fills the gap; remove() shrinks the leaf's code sections after.
  spill_->ensure_map();
  auto it = spill_->map.find(id);
  if (it == spill_->map.end()) return;
  const size_t li = it->second >> 32, pos = it->second & 0xFFFFFFFFu, M = layout_.num_blocks, gb = group_bytes();
  SpillStore::List& l = spill_->lists[li];
  const size_t last = l.n - 1;
  move_last_code(leaves_[li].codes.spill(), pos, last, M, gb);
  if (pos != last) {
    l.ids[pos] = l.ids[last];
    l.ref[pos] = l.ref[last];
    if (!l.bias.empty()) l.bias[pos] = l.bias[last];
    spill_->map[l.ids[pos]] = (uint64_t(li) << 32) | pos;
  }
  l.ids.pop_back();
  l.ref.pop_back();
  if (!l.bias.empty()) l.bias.pop_back();
  l.n--;
  spill_->map.erase(it);
  spill_->total--;
}

void Index::init_spill() {
  if (static_cast<uint32_t>(p_.spill) > 1) throw InvalidArgument("unknown spill mode");
  if (!(p_.soar_lambda >= 0 && p_.soar_lambda <= kMaxSoarLambda))
    throw InvalidArgument("soar_lambda must be in [0, " + std::to_string(kMaxSoarLambda) + "]");
  spill_.reset();
  if (p_.spill == SpillMode::kNone) return;
  spill_ = std::make_unique<SpillStore>();
  spill_->lambda = p_.soar_lambda;
}

void Index::spill_reset() {
  if (spill_) spill_->reset(nleaves_, resid_centers_.data(), p_.d);
}

void Index::spill_encode(const float* x, size_t n, const std::vector<uint32_t>& leaf_of, int nthreads, Monitor* mon,
                         std::vector<uint32_t>& spill_leaf, std::vector<uint8_t>& spill_codes) const {
  spill_leaf.clear();
  spill_codes.clear();
  if (!spill_ || nleaves_ < 2) return;  // one leaf: nowhere to spill
  const size_t d = p_.d, M = layout_.num_blocks;
  const EtaFunction& eta_fn = *eta_fn_;
  spill_leaf.resize(n);
  spill_codes.resize(n * M);
  const size_t step = 8192;
  for (size_t b0 = 0; b0 < n; b0 += step) {
    check_stop(mon);
    const size_t e0 = std::min(n, b0 + step);
    parallel_for(e0 - b0, nthreads, 256, [&](size_t b, size_t e) {
      std::vector<float> v(d), r(d), u(d), scratch;
      EncodeScratch sc;
      for (size_t ii = b; ii < e; ++ii) {
        const size_t i = b0 + ii;
        prepare_vector(x + i * d, v.data());
        const uint32_t c = spill_->choose(v.data(), leaf_of[i], resid_centers_.data(), d, scratch);
        spill_leaf[i] = c;
        const float* cc = resid_centers_.data() + size_t(c) * d;
        for (size_t j = 0; j < d; ++j) r[j] = v[j] - cc[j];
        // The same anisotropic weight as the primary copy (encode_points).
        double nrm = 0;
        for (size_t j = 0; j < d; ++j) nrm += double(v[j]) * v[j];
        nrm = std::sqrt(nrm);
        double eta = 1.0;
        if (nrm > 0 && !eta_fn.plain()) {
          for (size_t j = 0; j < d; ++j) u[j] = static_cast<float>(v[j] / nrm);
          eta = std::max(1.0, eta_fn(p_.metric == Metric::kCosine ? 1.0 : nrm));
        }
        encode_anisotropic(r.data(), eta != 1.0 ? u.data() : nullptr, eta, layout_, codebooks_t_.data(),
                           spill_codes.data() + i * M, sc);
      }
    });
    if (mon) mon->progress("soar spill", e0, n, "");
  }
}

void Index::spill_commit(const float* x, size_t n, const std::vector<uint32_t>& leaf_of,
                         const std::vector<int64_t>& new_ids, const std::vector<uint32_t>& spill_leaf,
                         const std::vector<uint8_t>& spill_codes) {
  if (!spill_ || spill_leaf.empty()) return;
  const size_t d = p_.d, M = layout_.num_blocks, gb = group_bytes(), L = nleaves_;
  const bool l2 = p_.metric == Metric::kL2;
  // Positions of the new primary copies: add() appended them to their leaves in input order.
  std::vector<size_t> more(L, 0), spill_more(L, 0);
  for (size_t i = 0; i < n; ++i) {
    more[leaf_of[i]]++;
    spill_more[spill_leaf[i]]++;
  }
  std::vector<size_t> next(L);
  for (size_t l = 0; l < L; ++l) next[l] = leaves_[l].n - more[l];
  for (size_t l = 0; l < L; ++l) {
    if (!spill_more[l]) continue;
    SpillStore::List& sl = spill_->lists[l];
    const size_t need = sl.n + spill_more[l], room = sl.n == 0 ? need : need + need / 2;
    if (need > 0xFFFFFFFFull) throw InvalidArgument("too many vectors in one leaf");
    if (sl.ids.capacity() < need) {
      sl.ids.reserve(room);
      sl.ref.reserve(room);
      if (l2) sl.bias.reserve(room);
    }
  }
  std::vector<float> v(d);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t pl = leaf_of[i];
    const size_t ppos = next[pl]++;
    SpillStore::List& sl = spill_->lists[spill_leaf[i]];
    const size_t pos = sl.n;  // add() sized the leaf's spilled section for the new copies
    uint8_t* group = leaves_[spill_leaf[i]].codes.spill() + (pos / 32) * gb;
    for (size_t m = 0; m < M; ++m) set_nibble(group, m, pos % 32, spill_codes[i * M + m]);
    sl.ids.push_back(new_ids[i]);
    sl.ref.push_back((uint64_t(pl) << 32) | ppos);
    if (l2) {
      // Only scanned (re-scoring uses the primary copy): the scan's term, as for the primary.
      double s = 0;
      if (p_.l2_decoded_norms) {
        s = decoded_norm2(spill_leaf[i], spill_codes.data() + i * M);
      } else {
        prepare_vector(x + i * d, v.data());
        for (size_t j = 0; j < d; ++j) s += double(v[j]) * v[j];
      }
      sl.bias.push_back(static_cast<float>(-0.5 * s));
    }
    if (spill_->map_valid) spill_->map[new_ids[i]] = (uint64_t(spill_leaf[i]) << 32) | pos;
    sl.n++;
  }
  spill_->total += n;
}

void Index::get_spill_leaves(const int64_t* ids, size_t n, int64_t* out) const {
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::unordered_map<int64_t, int64_t> where;
  if (spill_)
    for (size_t l = 0; l < spill_->lists.size(); ++l)
      for (uint32_t i = 0; i < spill_->lists[l].n; ++i) where[spill_->lists[l].ids[i]] = int64_t(l);
  std::unordered_map<int64_t, bool> known;
  for (const Leaf& l : leaves_)
    for (uint32_t i = 0; i < l.n; ++i) known[l.ids_p[i]] = true;
  for (size_t t = 0; t < n; ++t) {
    if (!known.count(ids[t])) throw InvalidArgument("unknown id " + std::to_string(ids[t]));
    auto it = where.find(ids[t]);
    out[t] = it == where.end() ? -1 : it->second;
  }
}

void Index::spill_load(const uint8_t* data, size_t size) {
  // Called by deserialize once the leaves are in place; validates every reference.
  const size_t L = nleaves_, gb = group_bytes();
  const bool l2 = p_.metric == Metric::kL2;
  spill_->reset(trained_ ? L : 0, resid_centers_.data(), p_.d);
  ByteReader r(SectionView{data, size}, "SOAR");
  r.get<uint32_t>();
  r.get<double>();
  const uint64_t nl = r.get<uint64_t>();
  if (nl != (trained_ ? L : 0)) throw InvalidArgument("corrupted index file: SOAR section has the wrong leaf count");
  if (nl == 0) return;
  if (nl > r.remaining() / sizeof(uint64_t)) throw InvalidArgument("corrupted index file: section SOAR is too short");
  std::vector<uint64_t> sizes(nl);
  uint64_t total = 0, ngroups = 0;
  for (uint64_t l = 0; l < nl; ++l) {
    sizes[l] = r.get<uint64_t>();
    if (sizes[l] > ntotal_) throw InvalidArgument("corrupted index file: invalid SOAR list size");
    total += sizes[l];
    ngroups += (sizes[l] + 31) / 32;
  }
  if (total > ntotal_) throw InvalidArgument("corrupted index file: more spilled copies than vectors");
  const size_t need = ngroups * gb + total * (sizeof(int64_t) + sizeof(uint64_t) + (l2 ? sizeof(float) : 0));
  if (r.remaining() != need) throw InvalidArgument("corrupted index file: section SOAR has the wrong size");
  const uint8_t* p = data + (size - need);
  const uint8_t* codes = p;
  const uint8_t* ids = codes + ngroups * gb;
  const uint8_t* refs = ids + total * sizeof(int64_t);
  const uint8_t* bias = refs + total * sizeof(uint64_t);
  size_t goff = 0, off = 0;
  std::vector<int64_t> seen;
  seen.reserve(total);
  for (uint64_t l = 0; l < nl; ++l) {
    SpillStore::List& sl = spill_->lists[l];
    sl.n = static_cast<uint32_t>(sizes[l]);
    const size_t ng = (sl.n + 31) / 32;
    Leaf& leaf = leaves_[l];
    if (mapping_) {
      leaf.spill_p = codes + goff * gb;  // in place, as the leaves' codes (the section's checksum was verified)
    } else {
      leaf.codes.assign(leaf.codes_p, (leaf.n + 31) / 32, codes + goff * gb, ng, gb);
      sync_views(leaf);
    }
    sl.ids.resize(sl.n);
    sl.ref.resize(sl.n);
    // (an empty list has no buffer: memcpy's pointers must not be null, even for 0 bytes)
    if (sl.n) std::memcpy(sl.ids.data(), ids + off * sizeof(int64_t), sl.n * sizeof(int64_t));
    if (sl.n) std::memcpy(sl.ref.data(), refs + off * sizeof(uint64_t), sl.n * sizeof(uint64_t));
    if (l2) {
      sl.bias.resize(sl.n);
      if (sl.n) std::memcpy(sl.bias.data(), bias + off * sizeof(float), sl.n * sizeof(float));
      for (float b : sl.bias)
        if (!std::isfinite(b)) throw InvalidArgument("corrupted index file: non-finite value in SOAR");
    }
    for (uint32_t i = 0; i < sl.n; ++i) {
      const uint64_t pl = sl.ref[i] >> 32, pp = sl.ref[i] & 0xFFFFFFFFu;
      if (pl >= L || pl == l || pp >= leaves_[pl].n || leaves_[pl].ids_p[pp] != sl.ids[i])
        throw InvalidArgument("corrupted index file: SOAR copy does not match its primary copy");
      seen.push_back(sl.ids[i]);
    }
    goff += ng;
    off += sl.n;
  }
  std::sort(seen.begin(), seen.end());
  if (std::adjacent_find(seen.begin(), seen.end()) != seen.end())
    throw InvalidArgument("corrupted index file: duplicate SOAR copy");
  spill_->total = total;
}

}  // namespace avq
