// The q8_0 matrix-vector product for aarch64, written once around a block dot product that
// neon.cc (vmull_s8, any ARMv8) and neon_dotprod.cc (sdot, ARMv8.2 dotprod) each supply. Those
// files are compiled with different flags, so everything here has internal linkage: each keeps
// its own copy (see kernel_sets.h).
#pragma once

#include <arm_neon.h>

#include <cstdint>
#include <cstring>

#include "engine/kernels/kernels.h"

namespace dgpt {
namespace kernels {
namespace {

inline float HardwareHalfToFloat(uint16_t bits) {
  __fp16 half;
  std::memcpy(&half, &bits, sizeof(half));
  return half;  // fcvt: exact
}

// One row at a time (see avx2.cc for why). Each block adds its 4 int32 lanes (lane i holding
// bytes 4i..4i+3 of both 16-byte halves, a grouping both block dot products share, so they agree
// bit for bit) times the product of the two scales. Even blocks go to one accumulator, odd ones
// to another, so consecutive blocks do not wait on each other's FMA.
template <typename DotBlock>
void GemvQ8_0Rows(float* y, const BlockQ8_0* w, const BlockQ8_0* x, int64_t cols, int64_t r0,
                  int64_t r1, DotBlock dot_block) {
  const auto add_block = [&](float32x4_t acc, const BlockQ8_0& wb, const BlockQ8_0& xb) {
    const int32x4_t dot =
        dot_block(vld1q_s8(wb.q), vld1q_s8(wb.q + 16), vld1q_s8(xb.q), vld1q_s8(xb.q + 16));
    return vfmaq_n_f32(acc, vcvtq_f32_s32(dot),
                       HardwareHalfToFloat(wb.scale) * HardwareHalfToFloat(xb.scale));
  };
  const int64_t blocks = cols / kQ8BlockSize;
  for (int64_t r = r0; r < r1; ++r) {
    const BlockQ8_0* row = w + r * blocks;
    float32x4_t even = vdupq_n_f32(0.0f), odd = vdupq_n_f32(0.0f);
    int64_t b = 0;
    for (; b + 2 <= blocks; b += 2) {
      even = add_block(even, row[b], x[b]);
      odd = add_block(odd, row[b + 1], x[b + 1]);
    }
    if (b < blocks) even = add_block(even, row[b], x[b]);
    y[r] = vaddvq_f32(vaddq_f32(even, odd));
  }
}

}  // namespace
}  // namespace kernels
}  // namespace dgpt
