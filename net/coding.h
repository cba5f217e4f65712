// Little-endian wire encoding, in the style of leveldb's util/coding.h: Put* appends a field to a
// byte vector, Reader consumes fields from the front of a span. Every multi-byte value is written
// and read one byte at a time, so the bytes are the same on any host (no struct casts, no
// assumption about host byte order).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace dgpt::net {

void PutU8(std::vector<uint8_t>* out, uint8_t value);
void PutU16(std::vector<uint8_t>* out, uint16_t value);
void PutU32(std::vector<uint8_t>* out, uint32_t value);
void PutU64(std::vector<uint8_t>* out, uint64_t value);
void PutF32(std::vector<uint8_t>* out, float value);  // the IEEE-754 bits, as a u32
// u32 byte length, then the bytes. REQUIRES: value.size() <= UINT32_MAX.
void PutString(std::vector<uint8_t>* out, std::string_view value);
void PutBytes32(std::vector<uint8_t>* out, std::span<const uint8_t, 32> bytes);

// Fixed-width little-endian values at a raw position, for headers patched after the fact.
// REQUIRES: `dst` / `src` point at 4 (resp. 2, 8) valid bytes.
void EncodeFixed32(uint8_t* dst, uint32_t value);
uint16_t DecodeFixed16(const uint8_t* src);
uint32_t DecodeFixed32(const uint8_t* src);
uint64_t DecodeFixed64(const uint8_t* src);

// Consumes fields from the front of a byte span it does not own (the span must outlive it).
// Every Get* returns false and consumes nothing when fewer bytes remain than the field needs,
// so a short buffer can never be read past its end.
class Reader {
 public:
  explicit Reader(std::span<const uint8_t> input) : input_(input) {}

  bool GetU8(uint8_t* value);
  bool GetU16(uint16_t* value);
  bool GetU32(uint32_t* value);
  bool GetU64(uint64_t* value);
  bool GetF32(float* value);
  bool GetBytes32(std::span<uint8_t, 32> bytes);
  // The next `length` bytes as a view into the input.
  bool GetBytes(size_t length, std::span<const uint8_t>* bytes);
  // u32 length then bytes. Allocates only after the bytes are known to be present.
  bool GetString(std::string* value);

  size_t remaining() const { return input_.size(); }

 private:
  std::span<const uint8_t> input_;
};

}  // namespace dgpt::net
