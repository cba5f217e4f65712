#include "tokenizer/utf8.h"

#include <cassert>
#include <cstdint>

namespace dgpt {
namespace {

// Length of the character a lead byte announces, or 0 if the byte can never start one
// (continuation bytes 0x80..0xBF, overlong leads 0xC0/0xC1, and 0xF5..0xFF).
int SequenceLength(uint8_t lead) {
  if (lead < 0x80) return 1;
  if (lead >= 0xC2 && lead <= 0xDF) return 2;
  if (lead >= 0xE0 && lead <= 0xEF) return 3;
  if (lead >= 0xF0 && lead <= 0xF4) return 4;
  return 0;
}

// Whether `byte` may follow `lead` as the second byte. The ranges are narrower than 0x80..0xBF
// for some leads so that overlongs, surrogates and code points above 0x10FFFF are rejected.
bool IsValidSecondByte(uint8_t lead, uint8_t byte) {
  switch (lead) {
    case 0xE0:
      return byte >= 0xA0 && byte <= 0xBF;
    case 0xED:
      return byte >= 0x80 && byte <= 0x9F;
    case 0xF0:
      return byte >= 0x90 && byte <= 0xBF;
    case 0xF4:
      return byte >= 0x80 && byte <= 0x8F;
    default:
      return byte >= 0x80 && byte <= 0xBF;
  }
}

bool IsContinuation(uint8_t byte) {
  return (byte & 0xC0) == 0x80;
}

// Whether bytes[start, start + count) is a valid beginning of the character starting at `start`.
// REQUIRES: count <= SequenceLength(bytes[start]).
bool IsValidPrefix(std::string_view bytes, size_t start, size_t count) {
  const auto lead = static_cast<uint8_t>(bytes[start]);
  for (size_t i = 1; i < count; ++i) {
    const auto byte = static_cast<uint8_t>(bytes[start + i]);
    if (i == 1 ? !IsValidSecondByte(lead, byte) : !IsContinuation(byte)) return false;
  }
  return true;
}

}  // namespace

void AppendUtf8(char32_t code_point, std::string* out) {
  assert(code_point <= 0x10FFFF && (code_point < 0xD800 || code_point > 0xDFFF));
  if (code_point < 0x80) {
    out->push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

size_t IncompleteUtf8TailLength(std::string_view bytes) {
  // A character is at most 4 bytes, so an incomplete one starts within the last 3.
  const size_t lookback = bytes.size() < 3 ? bytes.size() : 3;
  for (size_t tail = 1; tail <= lookback; ++tail) {
    const size_t start = bytes.size() - tail;
    const auto byte = static_cast<uint8_t>(bytes[start]);
    if (IsContinuation(byte)) continue;
    const int length = SequenceLength(byte);
    const bool incomplete = static_cast<size_t>(length) > tail;
    return incomplete && IsValidPrefix(bytes, start, tail) ? tail : 0;
  }
  return 0;
}

bool IsValidUtf8(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const int length = SequenceLength(static_cast<uint8_t>(bytes[i]));
    if (length == 0 || i + length > bytes.size() || !IsValidPrefix(bytes, i, length)) return false;
    i += length;
  }
  return true;
}

}  // namespace dgpt
