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

}  // namespace dgpt::net
