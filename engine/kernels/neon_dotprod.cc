// The q8_0 product through sdot (ARMv8.2 dotprod: Cortex-A76 / Raspberry Pi 5 and later).
// Compiled with -march=armv8.2-a+dotprod and called only when HWCAP_ASIMDDP says the CPU has it.
// Bit-identical to neon.cc's vmull_s8 version: both put the same bytes into each int32 lane.
#include <arm_neon.h>

#include "engine/kernels/kernel_sets.h"
#include "engine/kernels/neon_q8.h"

namespace dgpt {
namespace kernels {

void NeonDotprodGemvQ8_0(float* y, const BlockQ8_0* w, const BlockQ8_0* x, int64_t cols, int64_t r0,
                         int64_t r1) {
  GemvQ8_0Rows(y, w, x, cols, r0, r1, [](int8x16_t w0, int8x16_t w1, int8x16_t x0, int8x16_t x1) {
    return vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1);
  });
}

}  // namespace kernels
}  // namespace dgpt
