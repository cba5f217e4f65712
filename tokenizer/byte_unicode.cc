#include "tokenizer/byte_unicode.h"

#include <array>
#include <cstdint>

#include "tokenizer/utf8.h"

namespace dgpt {
namespace {

// Printable Latin-1 bytes map to themselves; the other 68 bytes take the code points from 256
// upwards, in byte order. The highest code point used is therefore 256 + 67 = 0x143.
constexpr char32_t kMaxMappedCodePoint = 256 + 67;

bool MapsToItself(int byte) {
  return (byte >= '!' && byte <= '~') || (byte >= 0xA1 && byte <= 0xAC) ||
         (byte >= 0xAE && byte <= 0xFF);
}

struct Tables {
  std::array<std::string, 256> byte_to_unicode;
  std::array<int, kMaxMappedCodePoint + 1> unicode_to_byte;  // -1 where no byte maps

  Tables() {
    unicode_to_byte.fill(-1);
    char32_t next_code_point = 256;
    for (int byte = 0; byte < 256; ++byte) {
      const char32_t code_point = MapsToItself(byte) ? byte : next_code_point++;
      AppendUtf8(code_point, &byte_to_unicode[byte]);
      unicode_to_byte[code_point] = byte;
    }
  }
};

const Tables& GetTables() {
  static const Tables tables;
  return tables;
}

// Decodes a 1- or 2-byte UTF-8 character at text[pos] (all mapped code points are < 0x800).
// Returns false for anything longer, which is then copied through unchanged.
bool DecodeShortCharacter(std::string_view text, size_t pos, char32_t* code_point, size_t* size) {
  const auto b0 = static_cast<uint8_t>(text[pos]);
  if (b0 < 0x80) {
    *code_point = b0;
    *size = 1;
    return true;
  }
  if ((b0 & 0xE0) == 0xC0 && pos + 1 < text.size()) {
    const auto b1 = static_cast<uint8_t>(text[pos + 1]);
    if ((b1 & 0xC0) != 0x80) return false;
    *code_point = (char32_t{b0 & 0x1Fu} << 6) | (b1 & 0x3Fu);
    *size = 2;
    return true;
  }
  return false;
}

}  // namespace

std::string_view ByteToUnicode(unsigned char byte) {
  return GetTables().byte_to_unicode[byte];
}

std::string UnicodeToBytes(std::string_view token) {
  const Tables& tables = GetTables();
  std::string bytes;
  bytes.reserve(token.size());
  size_t pos = 0;
  while (pos < token.size()) {
    char32_t code_point = 0;
    size_t size = 0;
    if (DecodeShortCharacter(token, pos, &code_point, &size) && code_point <= kMaxMappedCodePoint &&
        tables.unicode_to_byte[code_point] >= 0) {
      bytes.push_back(static_cast<char>(tables.unicode_to_byte[code_point]));
      pos += size;
    } else {
      bytes.push_back(token[pos++]);  // unmapped: keep the original byte
    }
  }
  return bytes;
}

}  // namespace dgpt
