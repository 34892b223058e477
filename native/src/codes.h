// Packing of 4-bit PQ codes: vectors are stored in groups of 32, and a group holds for each
// block m 16 bytes, byte j & 15 carrying vector j's code in its low (j < 16) or high nibble
// (the layout the LUT16 scan kernels read). Used by the index and the SOAR spill store.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

namespace avq {

inline void set_nibble(uint8_t* group, size_t m, size_t j, uint8_t code) {
  uint8_t& b = group[m * 16 + (j & 15)];
  if (j < 16)
    b = static_cast<uint8_t>((b & 0xF0) | code);
  else
    b = static_cast<uint8_t>((b & 0x0F) | (code << 4));
}

inline uint8_t get_nibble(const uint8_t* group, size_t m, size_t j) {
  uint8_t b = group[m * 16 + (j & 15)];
  return j < 16 ? (b & 0x0F) : (b >> 4);
}

// Removal from a packed list of `last + 1` codes (M blocks, groups of gb bytes): the last code
// moves into position pos, and its old slot is cleared to 0.
inline void move_last_code(uint8_t* codes, size_t pos, size_t last, size_t M, size_t gb) {
  uint8_t* gl = codes + (last / 32) * gb;
  if (pos != last) {
    uint8_t* gp = codes + (pos / 32) * gb;
    for (size_t m = 0; m < M; ++m) set_nibble(gp, m, pos % 32, get_nibble(gl, m, last % 32));
  }
  for (size_t m = 0; m < M; ++m) set_nibble(gl, m, last % 32, 0);
}

// The codes of one leaf: the groups of its own (primary) vectors, then the groups of the SOAR
// copies spilled into it (soar.h), in one buffer. A probed leaf's scan then reads one contiguous
// range: with the spilled copies in a separate allocation, a SOAR search was 3-8 % slower per
// query (in-process A/B, docs/benchmarks.md; likely the second stream the prefetcher must pick up
// per leaf). gb: bytes per group (num_blocks_pad * 16), the same for every call on one buffer.
class LeafCodes {
 public:
  uint8_t* primary() { return buf_.data(); }
  const uint8_t* primary() const { return buf_.data(); }
  uint8_t* spill() { return buf_.data() + g1_ * gb_; }
  const uint8_t* spill() const { return buf_.data() + g1_ * gb_; }
  size_t capacity_bytes() const { return buf_.capacity(); }

  // Resizes the sections to g1 and g2 groups: each keeps its leading groups, new groups are
  // zero (every code 0). Moves the spilled section when the primary one changes size.
  void resize(size_t g1, size_t g2, size_t gb) {
    gb_ = gb;
    const size_t keep2 = std::min(g2, g2_) * gb;
    if (g1 > g1_) {
      buf_.resize((g1 + std::max(g2, g2_)) * gb, 0);
      if (keep2) std::memmove(buf_.data() + g1 * gb, buf_.data() + g1_ * gb, keep2);
      std::memset(buf_.data() + g1_ * gb, 0, (g1 - g1_) * gb);
    } else if (g1 < g1_ && keep2) {
      std::memmove(buf_.data() + g1 * gb, buf_.data() + g1_ * gb, keep2);
    }
    buf_.resize((g1 + g2) * gb, 0);
    if (g2 > g2_) std::memset(buf_.data() + (g1 + std::min(g2, g2_)) * gb, 0, (g2 - std::min(g2, g2_)) * gb);
    g1_ = g1;
    g2_ = g2;
  }
  // Room for `groups` groups in all without reallocating.
  void reserve(size_t groups, size_t gb) { buf_.reserve(groups * gb); }
  // Replaces the contents: g1 groups from p1, then g2 groups from p2.
  void assign(const uint8_t* p1, size_t g1, const uint8_t* p2, size_t g2, size_t gb) {
    std::vector<uint8_t> b((g1 + g2) * gb);
    if (g1) std::memcpy(b.data(), p1, g1 * gb);
    if (g2) std::memcpy(b.data() + g1 * gb, p2, g2 * gb);
    buf_.swap(b);
    g1_ = g1;
    g2_ = g2;
    gb_ = gb;
  }

 private:
  std::vector<uint8_t> buf_;
  size_t g1_ = 0, g2_ = 0, gb_ = 0;
};

}  // namespace avq
