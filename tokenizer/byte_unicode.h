// GPT-2's reversible byte <-> printable-character mapping (bytes_to_unicode in OpenAI's
// encoder.py). vocab.json and merges.txt spell tokens in these characters, so that raw bytes
// such as spaces and control codes never appear in the files: ' ' is "Ġ", '\n' is "Ċ".
#pragma once

#include <string>
#include <string_view>

namespace dgpt {

// The UTF-8 spelling of the character that stands for `byte`.
std::string_view ByteToUnicode(unsigned char byte);

// Maps a token spelled in those characters back to the bytes it stands for. Characters outside
// the mapping (e.g. in hand-added tokens) are kept as their own UTF-8 bytes, as Hugging Face does.
std::string UnicodeToBytes(std::string_view token);

}  // namespace dgpt
