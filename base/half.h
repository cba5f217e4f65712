// The one IEEE-754 binary16 (half) and bfloat16 codec: checkpoints (F16/BF16 tensors), the
// kernels' scalar reference, q8_0 scales and f16 activations on the wire all use it.
//
// Narrowing (float -> half / bfloat16) rounds to nearest, ties to even; magnitudes from 65520 up
// become half infinity (bfloat16 shares float's range); results below half's normal range become
// half subnormals or signed zero. Widening is exact for every non-NaN input.
//
// NaN rule: a NaN stays a NaN of the same sign. Widening keeps every payload bit, so
// half -> float -> half (and bfloat16 -> float -> bfloat16) is the identity on all 65536 patterns,
// signalling NaNs included: an f16 frame on the wire decodes and re-encodes to the same bytes.
// Narrowing keeps the payload's top bits; a payload that sat only in the dropped bits becomes the
// quiet bit, so a NaN never turns into infinity. (Hardware conversions, x86 F16C and ARM FCVT,
// quiet signalling NaNs instead; the SIMD kernels may, and their tests allow it.)
#pragma once

#include <cstdint>

namespace dgpt {

float HalfToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);

float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToBFloat16(float value);

}  // namespace dgpt
