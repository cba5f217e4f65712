// Tests for net/coding.h: the byte layout of every Put*, Reader's refusal to read past the end,
// and the f32 <-> f16 conversion against known bit patterns and a brute-force nearest search.
#include "net/coding.h"

#include <algorithm>
#include <array>
#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <span>
#include <string>
#include <vector>

namespace dgpt::net {
namespace {

using Bytes = std::vector<uint8_t>;

uint16_t Half(float value) {
  return FloatToHalfBits(value);
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

TEST_CASE("Put writes little-endian bytes regardless of host order", "[net][coding]") {
  Bytes out;
  PutU8(&out, 0xab);
  PutU16(&out, 0x0102);
  PutU32(&out, 0x03040506);
  PutU64(&out, 0x0708090a0b0c0d0eull);
  PutF32(&out, 1.0f);  // 0x3f800000
  CHECK(out == Bytes{0xab, 0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a, 0x09,
                     0x08, 0x07, 0x00, 0x00, 0x80, 0x3f});
}

TEST_CASE("PutString writes a u32 length then the bytes", "[net][coding]") {
  Bytes out;
  PutString(&out, "hi!");
  PutString(&out, "");
  CHECK(out == Bytes{3, 0, 0, 0, 'h', 'i', '!', 0, 0, 0, 0});
}

TEST_CASE("PutBytes32 writes the 32 bytes verbatim", "[net][coding]") {
  std::array<uint8_t, 32> bytes;
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(0xf0 - i);
  Bytes out = {0x11};
  PutBytes32(&out, bytes);
  REQUIRE(out.size() == 33);
  CHECK(std::equal(bytes.begin(), bytes.end(), out.begin() + 1));
}

TEST_CASE("Reader reads back every Put", "[net][coding]") {
  Bytes out;
  std::array<uint8_t, 32> nonce;
  nonce.fill(0x5a);
  PutU8(&out, 0xff);
  PutU16(&out, 0xfffe);
  PutU32(&out, 0xfffffffd);
  PutU64(&out, 0xfffffffffffffffcull);
  PutF32(&out, FromBits(0x7fc12345));  // NaN with a payload: bits must survive
  PutString(&out, std::string("a\0b", 3));
  PutBytes32(&out, nonce);

  Reader reader(out);
  uint8_t u8;
  uint16_t u16;
  uint32_t u32;
  uint64_t u64;
  float f32;
  std::string text;
  std::array<uint8_t, 32> read_nonce{};
  REQUIRE(reader.GetU8(&u8));
  REQUIRE(reader.GetU16(&u16));
  REQUIRE(reader.GetU32(&u32));
  REQUIRE(reader.GetU64(&u64));
  REQUIRE(reader.GetF32(&f32));
  REQUIRE(reader.GetString(&text));
  REQUIRE(reader.GetBytes32(read_nonce));
  CHECK(u8 == 0xff);
  CHECK(u16 == 0xfffe);
  CHECK(u32 == 0xfffffffd);
  CHECK(u64 == 0xfffffffffffffffcull);
  CHECK(Bits(f32) == 0x7fc12345);
  CHECK(text == std::string("a\0b", 3));
  CHECK(read_nonce == nonce);
  CHECK(reader.remaining() == 0);
  CHECK_FALSE(reader.GetU8(&u8));
}

TEST_CASE("Reader refuses short data and consumes nothing", "[net][coding]") {
  const Bytes three = {1, 2, 3};
  Reader reader(three);
  uint32_t u32;
  uint64_t u64;
  float f32;
  std::array<uint8_t, 32> bytes32;
  std::span<const uint8_t> view;
  CHECK_FALSE(reader.GetU32(&u32));
  CHECK_FALSE(reader.GetU64(&u64));
  CHECK_FALSE(reader.GetF32(&f32));
  CHECK_FALSE(reader.GetBytes32(bytes32));
  CHECK_FALSE(reader.GetBytes(4, &view));
  CHECK(reader.remaining() == 3);
  uint16_t u16;
  REQUIRE(reader.GetU16(&u16));
  CHECK(u16 == 0x0201);
  CHECK_FALSE(reader.GetU16(&u16));
  CHECK(reader.remaining() == 1);
}

TEST_CASE("GetString whose length runs past the end fails without consuming", "[net][coding]") {
  Bytes out;
  PutU32(&out, 0xffffffff);  // claims 4 GiB: must not allocate
  out.push_back('x');
  Reader reader(out);
  std::string text = "unchanged";
  CHECK_FALSE(reader.GetString(&text));
  CHECK(text == "unchanged");
  CHECK(reader.remaining() == 5);

  const Bytes short_length = {2, 0, 0};
  Reader short_reader(short_length);
  CHECK_FALSE(short_reader.GetString(&text));
  CHECK(short_reader.remaining() == 3);
}

TEST_CASE("EncodeFixed32 and DecodeFixed* agree with Put", "[net][coding]") {
  uint8_t raw[8];
  EncodeFixed32(raw, 0xa1b2c3d4);
  CHECK(raw[0] == 0xd4);
  CHECK(raw[3] == 0xa1);
  CHECK(DecodeFixed32(raw) == 0xa1b2c3d4);
  CHECK(DecodeFixed16(raw) == 0xc3d4);
  Bytes out;
  PutU64(&out, 0x8000000000000001ull);
  CHECK(DecodeFixed64(out.data()) == 0x8000000000000001ull);
}

TEST_CASE("f16 encodes known values to their bit patterns", "[net][f16]") {
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

TEST_CASE("f16 overflows to infinity from 65520 up", "[net][f16]") {
  CHECK(Half(std::nextafter(65520.0f, 0.0f)) == 0x7bff);  // just below the midpoint
  CHECK(Half(65520.0f) == 0x7c00);  // the midpoint ties to even, which is the infinity pattern
  CHECK(Half(-65520.0f) == 0xfc00);
  CHECK(Half(1e10f) == 0x7c00);
  CHECK(Half(std::numeric_limits<float>::max()) == 0x7c00);
  CHECK(Half(-std::numeric_limits<float>::max()) == 0xfc00);
}

TEST_CASE("f16 rounds ties to even", "[net][f16]") {
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

TEST_CASE("f16 flushes float32 denormals to signed zero", "[net][f16]") {
  CHECK(Half(FromBits(0x00000001)) == 0x0000);
  CHECK(Half(FromBits(0x807fffff)) == 0x8000);
}

TEST_CASE("f16 keeps NaN a NaN, with its sign and top payload bits", "[net][f16]") {
  auto is_half_nan = [](uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; };
  CHECK(Half(std::numeric_limits<float>::quiet_NaN()) == 0x7e00);
  CHECK(Half(FromBits(0xffc00000)) == 0xfe00);
  CHECK(Half(FromBits(0x7f802000)) == 0x7c01);              // payload in the kept bits
  const uint16_t low_payload = Half(FromBits(0x7f800001));  // payload only in dropped bits
  CHECK(is_half_nan(low_payload));
  CHECK(std::isnan(HalfBitsToFloat(0x7c01)));
  CHECK(std::isnan(HalfBitsToFloat(0xfe00)));
  CHECK(std::signbit(HalfBitsToFloat(0xfe00)));
}

TEST_CASE("f16 decodes known bit patterns exactly", "[net][f16]") {
  CHECK(HalfBitsToFloat(0x3c00) == 1.0f);
  CHECK(HalfBitsToFloat(0xc000) == -2.0f);
  CHECK(HalfBitsToFloat(0x7bff) == 65504.0f);
  CHECK(HalfBitsToFloat(0x0001) == std::ldexp(1.0f, -24));
  CHECK(HalfBitsToFloat(0x03ff) == std::ldexp(1023.0f, -24));
  CHECK(HalfBitsToFloat(0x0400) == std::ldexp(1.0f, -14));
  CHECK(HalfBitsToFloat(0x7c00) == std::numeric_limits<float>::infinity());
  CHECK(HalfBitsToFloat(0xfc00) == -std::numeric_limits<float>::infinity());
  CHECK(Bits(HalfBitsToFloat(0x8000)) == 0x80000000);
}

TEST_CASE("every f16 bit pattern decodes to its definition and encodes back", "[net][f16]") {
  for (uint32_t h = 0; h <= 0xffff; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    const float value = HalfBitsToFloat(bits);
    INFO("half bits 0x" << std::hex << h);
    const bool is_nan = (bits & 0x7c00) == 0x7c00 && (bits & 0x3ff) != 0;
    if (is_nan) {
      REQUIRE(std::isnan(value));
    } else {
      REQUIRE(static_cast<double>(value) == HalfDefinition(bits));
    }
    REQUIRE(FloatToHalfBits(value) == bits);  // NaN payloads included
  }
}

// For finite inputs below the overflow threshold the result must be a nearest half, and the
// even one on a tie. Checked against both neighbours of the chosen magnitude.
void CheckNearest(float value) {
  const uint16_t half = FloatToHalfBits(value);
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

TEST_CASE("f16 picks the nearest half for random and strided floats", "[net][f16]") {
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
TEST_CASE("f16 agrees with the compiler's own half conversion", "[net][f16]") {
  std::mt19937 rng(7);
  for (int i = 0; i < 300000; ++i) {
    const float value = FromBits(rng());
    if (std::isnan(value)) continue;
    const auto expected = std::bit_cast<uint16_t>(static_cast<CompilerHalf>(value));
    INFO("float bits 0x" << std::hex << Bits(value));
    REQUIRE(FloatToHalfBits(value) == expected);
  }
}
#endif

}  // namespace
}  // namespace dgpt::net
