// Small UTF-8 helpers shared by the tokenizers and the streaming decoder.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace dgpt {

// Appends the UTF-8 encoding of `code_point`.
// REQUIRES: code_point <= 0x10FFFF and is not a surrogate (0xD800..0xDFFF).
void AppendUtf8(char32_t code_point, std::string* out);

// The number of bytes at the end of `bytes` that start a valid multi-byte UTF-8 character but
// stop before it is complete (0..3). Such a tail may still become valid when more bytes arrive;
// anything else (complete characters, stray continuation bytes, invalid lead bytes) is final.
size_t IncompleteUtf8TailLength(std::string_view bytes);

// True if `bytes` is well-formed UTF-8 (no overlongs, surrogates or code points > 0x10FFFF).
bool IsValidUtf8(std::string_view bytes);

}  // namespace dgpt
