// CPU feature detection and run-time selection of the kernel table (namespace avq::kernels).
//
// Compiled with the baseline flags only: nothing here may use AVX. A level is usable when it is
// compiled in (AVQ_HAVE_X86_KERNELS for the AVX levels) and the CPU and OS support it:
//  * AVX2:    CPUID AVX, AVX2, FMA, F16C (float16 re-ranking), plus POPCNT, BMI1 and BMI2
//             (kernels_avx2.cpp is built with -mavx2 -mf16c -mbmi -mbmi2, which let the compiler
//             emit those instructions; every AVX2 CPU has them, the check only guards against odd
//             virtual CPUs), OSXSAVE set and XCR0
//             showing the OS saves XMM and YMM state (bits 1, 2).
//  * AVX-512: AVX-512 F, BW, VL, DQ, XCR0 bits 1, 2, 5, 6, 7 (XMM, YMM, opmask, ZMM_Hi256,
//             Hi16_ZMM), and everything the AVX2 level needs (the AVX-512 TU is built with the
//             AVX2 flags too).
// No printing, no side effects besides caching the answers.

#include <atomic>
#include <cstdlib>

#include "kernels/kernels.h"

#if defined(AVQ_HAVE_X86_KERNELS) && (defined(__x86_64__) || defined(__i386__)) && \
    (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#define AVQ_CPUID_GNU 1
#endif

namespace avq {
namespace kernels {
namespace {

#if defined(AVQ_CPUID_GNU)

struct CpuFeatures {
  bool avx2 = false;
  bool avx512 = false;
};

// XCR0 via XGETBV (encoded as inline asm so this baseline TU needs no -mxsave).
// Only call after checking CPUID.1:ECX.OSXSAVE.
inline unsigned long long read_xcr0() {
  unsigned int eax = 0, edx = 0;
  __asm__ __volatile__("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0u));
  return (static_cast<unsigned long long>(edx) << 32) | eax;
}

CpuFeatures detect() {
  CpuFeatures f;
  unsigned int eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (!__get_cpuid_count(1, 0, &eax, &ebx, &ecx, &edx)) return f;
  const bool fma = (ecx >> 12) & 1u;
  const bool popcnt = (ecx >> 23) & 1u;
  const bool f16c = (ecx >> 29) & 1u;
  const bool osxsave = (ecx >> 27) & 1u;
  const bool avx = (ecx >> 28) & 1u;
  if (!osxsave || !avx) return f;

  const unsigned long long xcr0 = read_xcr0();
  const bool os_ymm = (xcr0 & 0x6ull) == 0x6ull;    // XMM | YMM
  const bool os_zmm = (xcr0 & 0xE6ull) == 0xE6ull;  // XMM | YMM | opmask | ZMM_Hi256 | Hi16_ZMM
  if (!os_ymm) return f;

  // __get_cpuid_count returns 0 when leaf 7 is above the maximum supported leaf.
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return f;
  const bool bmi1 = (ebx >> 3) & 1u;
  const bool avx2 = (ebx >> 5) & 1u;
  const bool bmi2 = (ebx >> 8) & 1u;
  const bool avx512f = (ebx >> 16) & 1u;
  const bool avx512dq = (ebx >> 17) & 1u;
  const bool avx512bw = (ebx >> 30) & 1u;
  const bool avx512vl = (ebx >> 31) & 1u;

  f.avx2 = avx2 && fma && f16c && popcnt && bmi1 && bmi2;
  f.avx512 = f.avx2 && os_zmm && avx512f && avx512dq && avx512bw && avx512vl;
  return f;
}

const CpuFeatures& features() {
  static const CpuFeatures f = detect();  // thread-safe one-time initialisation
  return f;
}

#endif  // AVQ_CPUID_GNU

inline char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

// Case-insensitive comparison of a C string with a lower-case literal.
bool equals_ci(const char* s, const char* lower) {
  for (; *s != '\0' && *lower != '\0'; ++s, ++lower) {
    if (ascii_lower(*s) != *lower) return false;
  }
  return *s == '\0' && *lower == '\0';
}

std::atomic<const KernelTable*>& active_slot() {
  // Function-local static: initialised exactly once, thread-safely, on first use.
  static std::atomic<const KernelTable*> slot{table_for(default_level())};
  return slot;
}

}  // namespace

bool cpu_has_avx2() {
#if defined(AVQ_CPUID_GNU)
  return features().avx2;
#else
  return false;
#endif
}

bool cpu_has_avx512() {
#if defined(AVQ_CPUID_GNU)
  return features().avx512;
#else
  return false;
#endif
}

SimdLevel best_supported_level() {
#if defined(AVQ_HAVE_X86_KERNELS)
  if (cpu_has_avx512()) return SimdLevel::kAvx512;
  if (cpu_has_avx2()) return SimdLevel::kAvx2;
#endif
  return SimdLevel::kScalar;
}

bool parse_level(const char* name, SimdLevel* out) {
  if (name == nullptr) return false;
  SimdLevel level;
  if (equals_ci(name, "scalar")) {
    level = SimdLevel::kScalar;
  } else if (equals_ci(name, "avx2")) {
    level = SimdLevel::kAvx2;
  } else if (equals_ci(name, "avx512")) {
    level = SimdLevel::kAvx512;
  } else {
    return false;
  }
  if (out != nullptr) *out = level;
  return true;
}

SimdLevel default_level() {
  const SimdLevel best = best_supported_level();
  SimdLevel requested;
  const char* env = std::getenv("AVQ_SIMD_LEVEL");
  if (env == nullptr || env[0] == '\0' || !parse_level(env, &requested)) return best;  // unset / unknown
  if (static_cast<int>(requested) > static_cast<int>(best)) return best;               // clamp
  return requested;
}

const KernelTable* table_for(SimdLevel level) {
  switch (level) {
    case SimdLevel::kScalar:
      return &scalar::table();
#if defined(AVQ_HAVE_X86_KERNELS)
    case SimdLevel::kAvx2:
      return cpu_has_avx2() ? &avx2::table() : nullptr;
    case SimdLevel::kAvx512:
      return cpu_has_avx512() ? &avx512::table() : nullptr;
#endif
    default:
      return nullptr;
  }
}

const KernelTable& active() {
  return *active_slot().load(std::memory_order_acquire);
}

bool set_active_level(SimdLevel level) {
  const KernelTable* t = table_for(level);
  if (t == nullptr) return false;
  active_slot().store(t, std::memory_order_release);
  return true;
}

}  // namespace kernels
}  // namespace avq
