#include "huge_pages.h"

#include <sys/mman.h>

#include <cstdint>

namespace avq {

void advise_huge_pages(void* p, size_t bytes) {
#if defined(MADV_HUGEPAGE)
  const uintptr_t kHuge = uintptr_t(2) << 20;
  uintptr_t b = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (e > b) madvise(reinterpret_cast<void*>(b), e - b, MADV_HUGEPAGE);  // advice only: failure is harmless
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace avq
