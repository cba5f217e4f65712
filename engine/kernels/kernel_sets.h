// Internal to engine/kernels and its test: the kernel sets each instruction-set file defines, and
// the pieces of dispatch that tests look at directly.
//
// The SIMD files are compiled with their own -m flags. Anything they share with the rest of the
// program must therefore be an out-of-line function compiled with the baseline flags (declared
// here, defined in portable.cc or half.cc): an inline function or template instantiated in an
// AVX-512 file may be the copy the linker keeps for everyone, and then crash an older CPU.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "engine/kernels/kernels.h"

namespace dgpt::kernels {

// Defined in the file of the same name; only the ones matching the target are compiled in.
extern const KernelSet kPortable;
extern const KernelSet kAvx2;
extern const KernelSet kAvx512;       // q8_0 through vpmaddubsw + vpmaddwd
extern const KernelSet kAvx512Vnni;   // q8_0 through vpdpbusd; otherwise kAvx512's functions
extern const KernelSet kNeon;         // q8_0 through vmull_s8 + pairwise adds
extern const KernelSet kNeonDotprod;  // q8_0 through sdot; otherwise kNeon's functions
void NeonDotprodGemvQ8_0(float* y, const BlockQ8_0* w, const BlockQ8_0* x, int64_t cols, int64_t r0,
                         int64_t r1);  // neon_dotprod.cc, for kNeonDotprod

// The stored q8_0 scale of a block whose largest magnitude is `amax`: FloatToHalf(min(amax / 127,
// 65504)). Every set's quantize_q8_0 calls this one function, which keeps them bit-identical.
uint16_t Q8ScaleBits(float amax);

// One runnable implementation. Variants that share a name (avx512 with and without VNNI, neon
// with and without dotprod) give bit-identical results: their integer dot products group the
// same bytes into each int32 lane. Only the first of each name is ever picked.
struct KernelVariant {
  std::string_view label;  // the set's name, or e.g. "avx512 (no vnni)"
  const KernelSet* set;
};
// Every compiled-in variant this CPU can run: portable first, then in order of preference,
// the preferred variant of a name before its alternatives.
std::vector<KernelVariant> RunnableKernelVariants();

// The set DGPT_KERNELS=`requested` selects from `available` (portable first, best last): the
// named one, else (with `warning` set to the line to print) the best. Empty `requested` picks
// the best without a warning.
const KernelSet& SelectKernels(std::string_view requested,
                               const std::vector<const KernelSet*>& available,
                               std::string* warning);

}  // namespace dgpt::kernels
