#include "net/coding.h"

#include <algorithm>
#include <bit>
#include <cassert>

namespace dgpt::net {

void PutU8(std::vector<uint8_t>* out, uint8_t value) {
  out->push_back(value);
}

void PutU16(std::vector<uint8_t>* out, uint16_t value) {
  out->push_back(static_cast<uint8_t>(value));
  out->push_back(static_cast<uint8_t>(value >> 8));
}

void PutU32(std::vector<uint8_t>* out, uint32_t value) {
  for (int shift = 0; shift < 32; shift += 8) out->push_back(static_cast<uint8_t>(value >> shift));
}

void PutU64(std::vector<uint8_t>* out, uint64_t value) {
  for (int shift = 0; shift < 64; shift += 8) out->push_back(static_cast<uint8_t>(value >> shift));
}

void PutF32(std::vector<uint8_t>* out, float value) {
  PutU32(out, std::bit_cast<uint32_t>(value));
}

void PutString(std::vector<uint8_t>* out, std::string_view value) {
  assert(value.size() <= UINT32_MAX);  // the length prefix is a u32
  PutU32(out, static_cast<uint32_t>(value.size()));
  out->insert(out->end(), value.begin(), value.end());
}

void PutBytes32(std::vector<uint8_t>* out, std::span<const uint8_t, 32> bytes) {
  out->insert(out->end(), bytes.begin(), bytes.end());
}

void EncodeFixed32(uint8_t* dst, uint32_t value) {
  for (int i = 0; i < 4; ++i) dst[i] = static_cast<uint8_t>(value >> (8 * i));
}

uint16_t DecodeFixed16(const uint8_t* src) {
  return static_cast<uint16_t>(src[0] | (src[1] << 8));
}

uint32_t DecodeFixed32(const uint8_t* src) {
  uint32_t value = 0;
  for (int i = 3; i >= 0; --i) value = (value << 8) | src[i];
  return value;
}

uint64_t DecodeFixed64(const uint8_t* src) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | src[i];
  return value;
}

bool Reader::GetU8(uint8_t* value) {
  if (input_.empty()) return false;
  *value = input_[0];
  input_ = input_.subspan(1);
  return true;
}

bool Reader::GetU16(uint16_t* value) {
  if (input_.size() < 2) return false;
  *value = DecodeFixed16(input_.data());
  input_ = input_.subspan(2);
  return true;
}

bool Reader::GetU32(uint32_t* value) {
  if (input_.size() < 4) return false;
  *value = DecodeFixed32(input_.data());
  input_ = input_.subspan(4);
  return true;
}

bool Reader::GetU64(uint64_t* value) {
  if (input_.size() < 8) return false;
  *value = DecodeFixed64(input_.data());
  input_ = input_.subspan(8);
  return true;
}

bool Reader::GetF32(float* value) {
  uint32_t bits;
  if (!GetU32(&bits)) return false;
  *value = std::bit_cast<float>(bits);
  return true;
}

bool Reader::GetBytes32(std::span<uint8_t, 32> bytes) {
  std::span<const uint8_t> view;
  if (!GetBytes(bytes.size(), &view)) return false;
  std::copy(view.begin(), view.end(), bytes.begin());
  return true;
}

bool Reader::GetBytes(size_t length, std::span<const uint8_t>* bytes) {
  if (input_.size() < length) return false;
  *bytes = input_.first(length);
  input_ = input_.subspan(length);
  return true;
}

bool Reader::GetString(std::string* value) {
  Reader attempt = *this;  // consume nothing unless the whole string is present
  uint32_t length;
  std::span<const uint8_t> bytes;
  if (!attempt.GetU32(&length) || !attempt.GetBytes(length, &bytes)) return false;
  value->assign(bytes.begin(), bytes.end());
  *this = attempt;
  return true;
}

uint16_t FloatToHalfBits(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint16_t sign = static_cast<uint16_t>((bits >> 16) & 0x8000);
  const uint32_t exponent = (bits >> 23) & 0xff;
  const uint32_t mantissa = bits & 0x7fffff;

  if (exponent == 0xff) {
    if (mantissa == 0) return sign | 0x7c00;  // infinity
    uint16_t half_mantissa = static_cast<uint16_t>(mantissa >> 13);
    if (half_mantissa == 0) half_mantissa = 0x200;  // the payload sat in dropped bits: stay NaN
    return sign | 0x7c00 | half_mantissa;
  }
  // Float32 subnormals are below 2^-126, far under half of the smallest half subnormal (2^-24).
  if (exponent == 0) return sign;

  const int unbiased = static_cast<int>(exponent) - 127;
  if (unbiased > 15) return sign | 0x7c00;  // overflow

  if (unbiased >= -14) {
    // Normal half: keep 10 of the 23 mantissa bits and round on the 13 dropped ones. A carry out
    // of the mantissa correctly bumps the exponent, and from 0x7bff it lands on infinity.
    uint32_t half = (static_cast<uint32_t>(unbiased + 15) << 10) | (mantissa >> 13);
    const uint32_t dropped = mantissa & 0x1fff;
    if (dropped > 0x1000 || (dropped == 0x1000 && (half & 1))) ++half;
    return static_cast<uint16_t>(sign | half);
  }

  // Half subnormal: the result counts units of 2^-24. The full significand (with its implicit
  // one) is worth significand * 2^(unbiased - 23) = (significand >> shift) units.
  const uint32_t significand = mantissa | 0x800000;
  const int shift = -unbiased - 1;  // >= 14 here
  if (shift > 24) return sign;      // below 2^-25: rounds to zero
  uint32_t half = significand >> shift;
  const uint32_t dropped = significand & ((1u << shift) - 1);
  const uint32_t halfway = 1u << (shift - 1);
  if (dropped > halfway || (dropped == halfway && (half & 1))) ++half;  // may reach 0x400: normal
  return static_cast<uint16_t>(sign | half);
}

float HalfBitsToFloat(uint16_t bits) {
  const uint32_t sign = static_cast<uint32_t>(bits & 0x8000) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1f;
  uint32_t mantissa = bits & 0x3ff;

  if (exponent == 0x1f) return std::bit_cast<float>(sign | 0x7f800000 | (mantissa << 13));
  if (exponent != 0) {
    return std::bit_cast<float>(sign | ((exponent - 15 + 127) << 23) | (mantissa << 13));
  }
  if (mantissa == 0) return std::bit_cast<float>(sign);
  // Subnormal half: 0.mantissa * 2^-14, renormalized so the leading one becomes implicit.
  int unbiased = -14;
  while ((mantissa & 0x400) == 0) {
    mantissa <<= 1;
    --unbiased;
  }
  mantissa &= 0x3ff;
  return std::bit_cast<float>(sign | (static_cast<uint32_t>(unbiased + 127) << 23) |
                              (mantissa << 13));
}

}  // namespace dgpt::net
