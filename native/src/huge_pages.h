// Allocation of the large arrays (reorder arena, loaded stores) on transparent huge pages.
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace avq {

// Advises the kernel to back [p, p + bytes) with transparent huge pages (no-op elsewhere).
void advise_huge_pages(void* p, size_t bytes);

// Grows v to n elements; a new buffer is reserved with room to grow and advised to use huge
// pages before it is touched.
template <class T>
void grow_huge(std::vector<T>& v, size_t n) {
  if (n > v.capacity()) {
    std::vector<T> bigger;
    bigger.reserve(std::max(n, v.capacity() + v.capacity() / 2));
    advise_huge_pages(bigger.data(), bigger.capacity() * sizeof(T));
    bigger.assign(v.begin(), v.end());
    v.swap(bigger);
  }
  v.resize(n);
}

template <class T>
void reserve_huge(std::vector<T>& v, size_t n) {
  std::vector<T>().swap(v);
  v.reserve(n);
  advise_huge_pages(v.data(), n * sizeof(T));
}

}  // namespace avq
