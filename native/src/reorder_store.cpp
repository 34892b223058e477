// The re-ranking store: float32, int8 or float16 copies of the vectors in one arena, leaf by leaf (see
// Index in index.h), its growth, compaction and rows, and the accessors of the float32 vectors.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "huge_pages.h"
#include "index.h"

namespace avq {

namespace {
// float -> IEEE binary16, rounded to nearest, ties to even, for finite |x| < 65520 (the caller
// keeps |x| < 2^15).
uint16_t float_to_half(float x) {
  uint32_t b;
  std::memcpy(&b, &x, 4);
  const uint16_t sign = static_cast<uint16_t>((b >> 16) & 0x8000u);
  const uint32_t a = b & 0x7FFFFFFFu;
  if (a >= 0x38800000u) {  // >= 2^-14: a normal half; round the 13 dropped bits to even
    const uint32_t r = a + 0x0FFFu + ((a >> 13) & 1u);
    return static_cast<uint16_t>(sign | ((r - (112u << 23)) >> 13));
  }
  if (a <= 0x33000000u) return sign;  // <= 2^-25: rounds to zero (2^-25 ties to even: zero)
  float f;
  std::memcpy(&f, &a, 4);
  // A subnormal half (or the smallest normal, 0x0400, when it rounds up): m 2^-24, m = x 2^24
  // rounded to nearest even (exact product; nearbyint uses the default rounding mode).
  return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(f * 16777216.0f)));
}
}  // namespace

void Index::clear_arena() {
  std::vector<float>().swap(rvec_);
  std::vector<int8_t>().swap(rvec8_);
  std::vector<uint16_t>().swap(rvec16_);
  arena_rows_ = hole_rows_ = 0;
  for (Leaf& l : leaves_) l.row_off = l.row_cap = 0;
  sync_store_views();
}

void Index::compact_arena() {
  // Rewrite the arena leaf by leaf without holes (room = size).
  if (p_.reorder == ReorderMode::kNone) return;
  const size_t d = p_.d;
  size_t rows = 0;
  for (const Leaf& l : leaves_) rows += l.n;
  std::vector<float> nv;
  std::vector<int8_t> n8;
  std::vector<uint16_t> n16;
  const size_t hw = f16_row_width();
  if (p_.reorder == ReorderMode::kFloat32) reserve_huge(nv, rows * d);
  if (p_.reorder == ReorderMode::kInt8) reserve_huge(n8, rows * d);
  if (p_.reorder == ReorderMode::kFloat16) reserve_huge(n16, rows * hw);
  size_t off = 0;
  for (Leaf& l : leaves_) {
    if (p_.reorder == ReorderMode::kFloat32)
      nv.insert(nv.end(), rvec_.begin() + l.row_off * d, rvec_.begin() + (l.row_off + l.n) * d);
    if (p_.reorder == ReorderMode::kInt8)
      n8.insert(n8.end(), rvec8_.begin() + l.row_off * d, rvec8_.begin() + (l.row_off + l.n) * d);
    if (p_.reorder == ReorderMode::kFloat16)
      n16.insert(n16.end(), rvec16_.begin() + l.row_off * hw, rvec16_.begin() + (l.row_off + l.n) * hw);
    l.row_off = off;
    l.row_cap = l.n;
    off += l.n;
  }
  rvec_.swap(nv);
  rvec8_.swap(n8);
  rvec16_.swap(n16);
  arena_rows_ = rows;
  hole_rows_ = 0;
  sync_store_views();
}

void Index::sync_store_views() {
  rvec_p_ = rvec_.empty() ? nullptr : rvec_.data();
  rvec8_p_ = rvec8_.empty() ? nullptr : rvec8_.data();
  rvec16_p_ = rvec16_.empty() ? nullptr : rvec16_.data();
}

// Room in the arena for `more[l]` new rows of each leaf l: a leaf that needs more moves to the
// end (exactly sized when it was empty, as in fit(); with 50% slack when it grows). Exclusive lock.
void Index::reserve_rows(const std::vector<size_t>& more) {
  if (p_.reorder == ReorderMode::kNone) return;
  const size_t d = p_.d;
  std::vector<std::pair<size_t, size_t>> moves;  // (leaf, old offset)
  for (size_t l = 0; l < nleaves_; ++l) {
    Leaf& leaf = leaves_[l];
    const size_t need = leaf.n + more[l];
    if (need <= leaf.row_cap) continue;
    const size_t cap = leaf.n == 0 ? need : need + need / 2;
    if (cap > 0xFFFFFFFFull) throw InvalidArgument("too many vectors in one leaf");
    if (leaf.n) moves.push_back({l, leaf.row_off});
    hole_rows_ += leaf.row_cap;
    leaf.row_off = arena_rows_;
    leaf.row_cap = static_cast<uint32_t>(cap);
    arena_rows_ += cap;
  }
  if (p_.reorder == ReorderMode::kFloat32) grow_huge(rvec_, arena_rows_ * d);
  if (p_.reorder == ReorderMode::kInt8) grow_huge(rvec8_, arena_rows_ * d);
  const size_t hw = f16_row_width();
  if (p_.reorder == ReorderMode::kFloat16) grow_huge(rvec16_, arena_rows_ * hw);
  for (const auto& mv : moves) {
    const Leaf& leaf = leaves_[mv.first];
    if (!rvec_.empty())
      std::memcpy(&rvec_[leaf.row_off * d], &rvec_[mv.second * d], size_t(leaf.n) * d * sizeof(float));
    if (!rvec8_.empty()) std::memcpy(&rvec8_[leaf.row_off * d], &rvec8_[mv.second * d], size_t(leaf.n) * d);
    if (!rvec16_.empty())
      std::memcpy(&rvec16_[leaf.row_off * hw], &rvec16_[mv.second * hw], size_t(leaf.n) * hw * sizeof(uint16_t));
  }
  sync_store_views();
}

// Stores the prepared vector v in arena row `row` (float32, int8 with the per-dimension scales, or
// float16 with the row's power-of-two scale).
void Index::store_row(size_t row, const float* v) {
  const size_t d = p_.d;
  if (p_.reorder == ReorderMode::kFloat16) {
    float mx = 0.f;
    for (size_t j = 0; j < d; ++j) mx = std::max(mx, std::fabs(v[j]));
    // s = 2^(e - 14) with 2^e <= max |v| < 2^(e+1): max |v| / s in [2^14, 2^15), below the
    // largest half (65504); s at least 2^-126 (a normal float: a row of tiny values only loses
    // the precision of its smallest values). Dividing by s is exact.
    const int e = mx > 0.f ? std::max(std::ilogb(mx) - 14, -126) : 0;
    const float s = std::ldexp(1.f, e), inv = std::ldexp(1.f, -e);
    uint16_t* h = &rvec16_[row * f16_row_width()];
    for (size_t j = 0; j < d; ++j) h[j] = float_to_half(v[j] * inv);
    std::memcpy(h + d, &s, sizeof(float));
    return;
  }
  if (p_.reorder == ReorderMode::kFloat32) std::memcpy(&rvec_[row * d], v, d * sizeof(float));
  if (p_.reorder == ReorderMode::kInt8)
    for (size_t j = 0; j < d; ++j) {
      float t = std::nearbyint(v[j] / int8_scale_[j]);
      rvec8_[row * d + j] = static_cast<int8_t>(std::max(-127.f, std::min(127.f, t)));
    }
}

// Copies arena row `from` over row `to` (remove() fills a hole with a leaf's last vector).
void Index::copy_row(size_t from, size_t to) {
  const size_t d = p_.d;
  if (!rvec_.empty()) std::memcpy(&rvec_[to * d], &rvec_[from * d], d * sizeof(float));
  if (!rvec8_.empty()) std::memcpy(&rvec8_[to * d], &rvec8_[from * d], d);
  const size_t hw = f16_row_width();
  if (!rvec16_.empty()) std::memcpy(&rvec16_[to * hw], &rvec16_[from * hw], hw * sizeof(uint16_t));
}

namespace {
void require_float32_store(ReorderMode mode) {
  if (mode != ReorderMode::kFloat32)
    throw InvalidArgument(std::string("an index with reorder='") + reorder_name(mode) + "' keeps no float32 vectors");
}
}  // namespace

void Index::get_vectors(const int64_t* ids, size_t n, float* out) const {
  require_float32_store(p_.reorder);
  std::shared_lock<std::shared_mutex> lock(mu_);
  if (n > ntotal_)
    throw InvalidArgument("asked for " + std::to_string(n) + " vectors, the index holds " + std::to_string(ntotal_));
  ensure_id_map();
  const size_t d = p_.d;
  for (size_t t = 0; t < n; ++t) {
    auto it = id_map_.find(ids[t]);
    if (it == id_map_.end()) throw InvalidArgument("unknown id " + std::to_string(ids[t]));
    const Leaf& l = leaves_[it->second >> 32];
    const size_t row = l.row_off + (it->second & 0xFFFFFFFFu);
    std::memcpy(out + t * d, rvec_p_ + row * d, d * sizeof(float));
  }
}

void Index::all_vectors(std::vector<int64_t>& ids, std::vector<float>& out) const {
  require_float32_store(p_.reorder);
  std::shared_lock<std::shared_mutex> lock(mu_);
  std::vector<std::pair<int64_t, size_t>> order;  // (id, arena row)
  order.reserve(ntotal_);
  for (const Leaf& l : leaves_)
    for (uint32_t i = 0; i < l.n; ++i) order.emplace_back(l.ids_p[i], l.row_off + i);
  std::sort(order.begin(), order.end());
  const size_t d = p_.d;
  ids.resize(order.size());
  out.resize(order.size() * d);
  for (size_t t = 0; t < order.size(); ++t) {
    ids[t] = order[t].first;
    std::memcpy(out.data() + t * d, rvec_p_ + order[t].second * d, d * sizeof(float));
  }
}

}  // namespace avq
