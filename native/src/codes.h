// Packing of 4-bit PQ codes: vectors are stored in groups of 32, and a group holds for each
// block m 16 bytes, byte j & 15 carrying vector j's code in its low (j < 16) or high nibble
// (the layout the LUT16 scan kernels read). Used by the index and the SOAR spill store.
#pragma once

#include <cstddef>
#include <cstdint>

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

}  // namespace avq
