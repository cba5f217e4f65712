// Tests for base/half.h: float <-> IEEE half against known bit patterns, the definition of
// binary16 computed in double, a brute-force nearest search and the compiler's own conversion;
// bfloat16 likewise; and the one NaN rule (a NaN stays a NaN of its sign, comes out quiet).
#include "base/half.h"

#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>

namespace dgpt {
namespace {

uint16_t Half(float value) {
  return FloatToHalf(value);
}
uint32_t Bits(float value) {
  return std::bit_cast<uint32_t>(value);
}
float FromBits(uint32_t bits) {
  return std::bit_cast<float>(bits);
}

// binary16 value straight from the definition, computed in double.
double HalfDefinition(uint16_t bits) {
  const int exponent = (bits >> 10) & 0x1f;
  const int mantissa = bits & 0x3ff;
  if (exponent == 0x1f && mantissa == 0) {
    return (bits & 0x8000) ? -HUGE_VAL : HUGE_VAL;
  }
  const double magnitude =
      exponent == 0 ? std::ldexp(mantissa, -24) : std::ldexp(1024 + mantissa, exponent - 25);
  return (bits & 0x8000) ? -magnitude : magnitude;
}

TEST_CASE("f16 encodes known values to their bit patterns", "[base][f16]") {
  CHECK(Half(1.0f) == 0x3c00);
  CHECK(Half(-2.0f) == 0xc000);
  CHECK(Half(0.5f) == 0x3800);
  CHECK(Half(0.1f) == 0x2e66);
  CHECK(Half(0.0f) == 0x0000);
  CHECK(Half(-0.0f) == 0x8000);
  CHECK(Half(65504.0f) == 0x7bff);                  // largest finite half
  CHECK(Half(std::ldexp(1.0f, -14)) == 0x0400);     // smallest normal
  CHECK(Half(std::ldexp(1023.0f, -24)) == 0x03ff);  // largest subnormal
  CHECK(Half(std::ldexp(1.0f, -24)) == 0x0001);     // smallest subnormal
  CHECK(Half(-std::ldexp(1.0f, -24)) == 0x8001);
  CHECK(Half(std::numeric_limits<float>::infinity()) == 0x7c00);
  CHECK(Half(-std::numeric_limits<float>::infinity()) == 0xfc00);
}

TEST_CASE("f16 overflows to infinity from 65520 up", "[base][f16]") {
  CHECK(Half(std::nextafter(65520.0f, 0.0f)) == 0x7bff);  // just below the midpoint
  CHECK(Half(65520.0f) == 0x7c00);  // the midpoint ties to even, which is the infinity pattern
  CHECK(Half(-65520.0f) == 0xfc00);
  CHECK(Half(1e10f) == 0x7c00);
  CHECK(Half(std::numeric_limits<float>::max()) == 0x7c00);
  CHECK(Half(-std::numeric_limits<float>::max()) == 0xfc00);
}

TEST_CASE("f16 rounds ties to even", "[base][f16]") {
  // Normal range: 1 + 2^-11 is halfway between 0x3c00 and 0x3c01.
  CHECK(Half(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);
  CHECK(Half(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(Half(std::nextafter(1.0f + std::ldexp(1.0f, -11), 2.0f)) == 0x3c01);
  CHECK(Half(std::nextafter(1.0f + std::ldexp(1.0f, -11), 0.0f)) == 0x3c00);
  // A carry out of the mantissa moves to the next binade: 2 - 2^-12 rounds up to 2.0.
  CHECK(Half(2.0f - std::ldexp(1.0f, -12)) == 0x4000);
  // Subnormal range: units of 2^-24.
  CHECK(Half(std::ldexp(1.0f, -25)) == 0x0000);  // half a unit: ties to 0
  CHECK(Half(std::nextafter(std::ldexp(1.0f, -25), 1.0f)) == 0x0001);
  CHECK(Half(3 * std::ldexp(1.0f, -25)) == 0x0002);  // 1.5 units: ties to 2
  CHECK(Half(5 * std::ldexp(1.0f, -25)) == 0x0002);  // 2.5 units: ties to 2
  CHECK(Half(std::ldexp(1.0f, -26)) == 0x0000);
  CHECK(Half(-std::ldexp(1.0f, -26)) == 0x8000);
  // 1023.5 units is halfway between the largest subnormal and the smallest normal (even).
  CHECK(Half(std::ldexp(2047.0f, -25)) == 0x0400);
}

TEST_CASE("f16 flushes float32 denormals to signed zero", "[base][f16]") {
  CHECK(Half(FromBits(0x00000001)) == 0x0000);
  CHECK(Half(FromBits(0x807fffff)) == 0x8000);
}

TEST_CASE("f16 keeps NaN a NaN, with its sign and top payload bits", "[base][f16]") {
  CHECK(Half(std::numeric_limits<float>::quiet_NaN()) == 0x7e00);
  CHECK(Half(FromBits(0xffc00000)) == 0xfe00);
  CHECK(Half(FromBits(0x7f802000)) == 0x7c01);  // signalling, payload in the kept bits: kept
  CHECK(Half(FromBits(0x7f800001)) == 0x7e00);  // payload only in dropped bits: the quiet bit
  CHECK(Half(FromBits(0xff800001)) == 0xfe00);
  // Widening keeps the payload exactly, signalling or not.
  CHECK(Bits(HalfToFloat(0x7c01)) == 0x7f802000);
  CHECK(Bits(HalfToFloat(0x7e01)) == 0x7fc02000);
  CHECK(Bits(HalfToFloat(0xfe00)) == 0xffc00000);
}

TEST_CASE("f16 decodes known bit patterns exactly", "[base][f16]") {
  CHECK(HalfToFloat(0x3c00) == 1.0f);
  CHECK(HalfToFloat(0xc000) == -2.0f);
  CHECK(HalfToFloat(0x7bff) == 65504.0f);
  CHECK(HalfToFloat(0x0001) == std::ldexp(1.0f, -24));
  CHECK(HalfToFloat(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(HalfToFloat(0x0400) == std::ldexp(1.0f, -14));
  CHECK(HalfToFloat(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(HalfToFloat(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(Bits(HalfToFloat(0x8000)) == 0x80000000);
}

TEST_CASE("every f16 bit pattern decodes to its definition and encodes back", "[base][f16]") {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    const float value = HalfToFloat(bits);
    INFO("half bits 0x" << std::hex << h);
    const bool is_nan = (bits & 0x7c00) == 0x7c00 && (bits & 0x3ff) != 0;
    if (is_nan) {
      REQUIRE(std::isnan(value));
    } else {
      REQUIRE(static_cast<double>(value) == HalfDefinition(bits));
    }
    REQUIRE(FloatToHalf(value) == bits);  // NaN payloads included
  }
}

// For finite inputs below the overflow threshold the result must be a nearest half, and the
// even one on a tie. Checked against both neighbours of the chosen magnitude.
void CheckNearest(float value) {
  const uint16_t half = FloatToHalf(value);
  INFO("float bits 0x" << std::hex << Bits(value) << " -> half 0x" << half);
  REQUIRE((half & 0x8000) == ((Bits(value) >> 16) & 0x8000));
  const double magnitude = std::fabs(static_cast<double>(value));
  const uint16_t m = half & 0x7fff;
  if (magnitude >= 65520.0) {
    REQUIRE(m == 0x7c00);
    return;
  }
  REQUIRE(m <= 0x7bff);
  const double distance = std::fabs(magnitude - HalfDefinition(m));
  for (int neighbour : {m - 1, m + 1}) {
    if (neighbour < 0 || neighbour > 0x7bff) continue;
    const double other = std::fabs(magnitude - HalfDefinition(static_cast<uint16_t>(neighbour)));
    REQUIRE(distance <= other);
    if (distance == other) REQUIRE((m & 1) == 0);
  }
}

TEST_CASE("f16 picks the nearest half for random and strided floats", "[base][f16]") {
  std::mt19937 rng(20240611);
  for (int i = 0; i < 300000; ++i) {
    const float value = FromBits(rng());
    if (!std::isnan(value)) CheckNearest(value);
  }
  // Dense near the interesting range: floats of magnitude 2^-26 .. 2^17.
  std::uniform_real_distribution<float> exponent(-26.0f, 17.0f);
  for (int i = 0; i < 300000; ++i) {
    const float value = std::exp2(exponent(rng)) * ((i & 1) ? -1.0f : 1.0f);
    CheckNearest(value);
  }
  for (uint64_t bits = 0; bits <= 0xffffffffull; bits += 65537) {
    const float value = FromBits(static_cast<uint32_t>(bits));
    if (!std::isnan(value)) CheckNearest(value);
  }
}

// The compiler's own half type: _Float16 on x86-64; GCC 12 on aarch64 (Raspberry Pi OS) defines
// __FLT16_MAX__ without supporting _Float16 in C++, but has the ARM __fp16.
#if defined(__aarch64__)
using CompilerHalf = __fp16;
#define DGPT_HAVE_COMPILER_HALF 1
#elif defined(__FLT16_MAX__)
using CompilerHalf = _Float16;
#define DGPT_HAVE_COMPILER_HALF 1
#endif

#ifdef DGPT_HAVE_COMPILER_HALF
TEST_CASE("f16 agrees with the compiler's own half conversion", "[base][f16]") {
  std::mt19937 rng(7);
  for (int i = 0; i < 300000; ++i) {
    const float value = FromBits(rng());
    if (std::isnan(value)) continue;
    const auto expected = std::bit_cast<uint16_t>(static_cast<CompilerHalf>(value));
    INFO("float bits 0x" << std::hex << Bits(value));
    REQUIRE(FloatToHalf(value) == expected);
  }
}
#endif

TEST_CASE("bfloat16 widens exactly and narrows to nearest even", "[base][bf16]") {
  CHECK(BFloat16ToFloat(0x3f80) == 1.0f);
  CHECK(BFloat16ToFloat(0xc040) == -3.0f);
  CHECK(Bits(BFloat16ToFloat(0x8000)) == 0x80000000);
  CHECK(BFloat16ToFloat(0x7f80) == std::numeric_limits<float>::infinity());
  CHECK(FloatToBFloat16(1.0f) == 0x3f80);
  CHECK(FloatToBFloat16(FromBits(0x3f808000)) == 0x3f80);  // tie: to even (down)
  CHECK(FloatToBFloat16(FromBits(0x3f818000)) == 0x3f82);  // tie: to even (up)
  CHECK(FloatToBFloat16(FromBits(0x3f808001)) == 0x3f81);  // above the tie
  CHECK(FloatToBFloat16(FromBits(0x7f7fffff)) == 0x7f80);  // float max rounds to infinity
  // Every pattern round-trips, NaN payloads included.
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    INFO("bfloat16 bits 0x" << std::hex << h);
    REQUIRE(Bits(BFloat16ToFloat(bits)) == static_cast<uint32_t>(bits) << 16);
    REQUIRE(FloatToBFloat16(BFloat16ToFloat(bits)) == bits);
  }
}

TEST_CASE("bfloat16 follows the same NaN rule as f16", "[base][bf16]") {
  CHECK(FloatToBFloat16(FromBits(0x7f800001)) == 0x7fc0);  // payload only in dropped bits
  CHECK(FloatToBFloat16(FromBits(0xff810000)) == 0xff81);  // signalling, payload kept
  CHECK(std::isnan(BFloat16ToFloat(0x7f81)));
}

}  // namespace
}  // namespace dgpt
