// Tests for net/coding.h: the byte layout of every Put* and Reader's refusal to read past the end.
// (The f32 <-> f16 conversion of f16 activations is base/half.h's: tests/unit/base_half_test.cc.)
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

uint32_t Bits(float value) {
  return std::bit_cast<uint32_t>(value);
}
float FromBits(uint32_t bits) {
  return std::bit_cast<float>(bits);
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

}  // namespace
}  // namespace dgpt::net
