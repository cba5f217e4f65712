#include "base/half.h"

#include <bit>
#include <cmath>

namespace dgpt {

float HalfToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1f;
  const uint32_t mantissa = bits & 0x3ff;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24
    const float magnitude = std::ldexp(static_cast<float>(mantissa), -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 31) {  // infinity or NaN: every payload bit is kept
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  }
  return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

uint16_t FloatToHalf(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t magnitude = bits & 0x7fffffff;
  if (magnitude > 0x7f800000) {  // NaN: the payload's top bits, else the quiet bit
    const auto payload = static_cast<uint16_t>((magnitude >> 13) & 0x3ff);
    return sign | 0x7c00 | (payload != 0 ? payload : 0x200);
  }
  // 65520 is halfway between 65504 (the largest half) and 65536; the tie goes to the even
  // neighbour, which is infinity.
  if (magnitude >= 0x477ff000) return sign | 0x7c00;
  if (magnitude >= 0x38800000) {  // a normal half (>= 2^-14): rebias the exponent, round
    uint32_t rebiased = magnitude - (112u << 23);
    rebiased += 0xfff + ((rebiased >> 13) & 1);  // round to nearest, ties to even
    return sign | static_cast<uint16_t>(rebiased >> 13);
  }
  // Subnormal or zero: adding 0.5 makes the FPU round the value to a multiple of 2^-24 (0.5's
  // ulp) to nearest even; the low bits of the sum are then the half's mantissa.
  const float sum = std::bit_cast<float>(magnitude) + 0.5f;
  return sign | static_cast<uint16_t>(std::bit_cast<uint32_t>(sum) - std::bit_cast<uint32_t>(0.5f));
}

float BFloat16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

uint16_t FloatToBFloat16(float value) {
  uint32_t bits = std::bit_cast<uint32_t>(value);
  if ((bits & 0x7fffffff) > 0x7f800000) {  // NaN: the payload's top bits, else the quiet bit
    const auto narrowed = static_cast<uint16_t>(bits >> 16);
    return (narrowed & 0x7f) != 0 ? narrowed : narrowed | 0x40;
  }
  bits += 0x7fff + ((bits >> 16) & 1);  // round to nearest, ties to even
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace dgpt
