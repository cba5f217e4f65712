// Which kernel set runs: the best one the CPU supports, chosen once, unless DGPT_KERNELS names
// another. Also the weight-format helpers, which do not depend on the instruction set.
//
// CMake defines DGPT_KERNELS_X86 or DGPT_KERNELS_AARCH64 for this file when it compiles the
// matching instruction-set files, so the two can never disagree.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#if defined(DGPT_KERNELS_X86)
#include <cpuid.h>
#elif defined(DGPT_KERNELS_AARCH64)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "engine/kernels/kernel_sets.h"
#include "engine/kernels/kernels.h"

namespace dgpt {

int64_t WeightRowBytes(WeightFormat format, int64_t cols) {
  switch (format) {
    case WeightFormat::kF32:
      return cols * static_cast<int64_t>(sizeof(float));
    case WeightFormat::kF16:
      return cols * static_cast<int64_t>(sizeof(uint16_t));
    case WeightFormat::kQ8_0:
      return cols / kQ8BlockSize * static_cast<int64_t>(sizeof(BlockQ8_0));
  }
  return 0;
}

std::string_view WeightFormatName(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32:
      return "f32";
    case WeightFormat::kF16:
      return "f16";
    case WeightFormat::kQ8_0:
      return "q8_0";
  }
  return "unknown";
}

bool ParseWeightFormat(std::string_view name, WeightFormat* format) {
  if (name == "f32" || name == "fp32") {
    *format = WeightFormat::kF32;
  } else if (name == "f16" || name == "fp16") {
    *format = WeightFormat::kF16;
  } else if (name == "q8_0" || name == "q8") {
    *format = WeightFormat::kQ8_0;
  } else {
    return false;
  }
  return true;
}

namespace kernels {

#if defined(DGPT_KERNELS_X86)
namespace {
// Clang's __builtin_cpu_supports does not know "f16c": ask CPUID leaf 1 directly. F16C needs no
// OS support beyond the YMM state that __builtin_cpu_supports("avx2") checks.
bool CpuHasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) && (ecx & bit_F16C) != 0;
}
}  // namespace
#endif

std::vector<KernelVariant> RunnableKernelVariants() {
  std::vector<KernelVariant> variants = {{"portable", &kPortable}};
#if defined(DGPT_KERNELS_X86)
  // __builtin_cpu_supports also checks (XGETBV) that the OS saves the YMM / ZMM registers.
  __builtin_cpu_init();
  const bool fma_f16c = __builtin_cpu_supports("fma") && CpuHasF16c();
  if (fma_f16c && __builtin_cpu_supports("avx2")) variants.push_back({"avx2", &kAvx2});
  if (fma_f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("avx512f") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl")) {
    if (__builtin_cpu_supports("avx512vnni")) {
      variants.push_back({"avx512", &kAvx512Vnni});
      variants.push_back({"avx512 (no vnni)", &kAvx512});
    } else {
      variants.push_back({"avx512", &kAvx512});
    }
  }
#elif defined(DGPT_KERNELS_AARCH64)
  const unsigned long hwcap = getauxval(AT_HWCAP);
  if (hwcap & HWCAP_ASIMD) {
    if (hwcap & HWCAP_ASIMDDP) {
      variants.push_back({"neon", &kNeonDotprod});
      variants.push_back({"neon (no dotprod)", &kNeon});
    } else {
      variants.push_back({"neon", &kNeon});
    }
  }
#endif
  return variants;
}

const KernelSet& SelectKernels(std::string_view requested,
                               const std::vector<const KernelSet*>& available,
                               std::string* warning) {
  const KernelSet& best = *available.back();
  if (requested.empty()) return best;
  std::string names;
  for (const KernelSet* set : available) {
    if (set->name == requested) return *set;
    if (!names.empty()) names += ", ";
    names += set->name;
  }
  *warning = "dgpt: DGPT_KERNELS=" + std::string(requested) +
             " is not available on this CPU (available: " + names + "); using " +
             std::string(best.name);
  return best;
}

}  // namespace kernels

std::vector<const KernelSet*> AvailableKernels() {
  std::vector<const KernelSet*> sets;
  std::string_view previous;
  for (const kernels::KernelVariant& variant : kernels::RunnableKernelVariants()) {
    // Alternatives follow the preferred variant of their name.
    if (variant.set->name == previous) continue;
    sets.push_back(variant.set);
    previous = variant.set->name;
  }
  return sets;
}

const KernelSet& ActiveKernels() {
  static const KernelSet& active = []() -> const KernelSet& {
    const char* requested = std::getenv("DGPT_KERNELS");
    std::string warning;
    const KernelSet& chosen =
        kernels::SelectKernels(requested ? requested : "", AvailableKernels(), &warning);
    if (!warning.empty()) std::fprintf(stderr, "%s\n", warning.c_str());
    return chosen;
  }();
  return active;
}

}  // namespace dgpt
