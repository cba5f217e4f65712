// GPT-2's pre-tokenizer: splits text into the "words" that BPE then encodes one at a time.
#pragma once

#include <functional>
#include <memory>
#include <string_view>
#include <utility>

#include "base/status.h"

// pcre2_code for 8-bit code units (pcre2.h needs PCRE2_CODE_UNIT_WIDTH, so it stays in the .cc).
struct pcre2_real_code_8;

namespace dgpt {

// Splits text with the reference GPT-2 pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// using PCRE2 with real Unicode classes. Unlike the reference (which only ever sees valid
// UTF-8), any byte string is accepted: each run of bytes that is not valid UTF-8 becomes a piece
// of its own, so the pieces always concatenate back to the input. Letters and digits are those
// of PCRE2's Unicode tables (Unicode 14 for PCRE2 10.42); characters assigned in later versions
// count as punctuation here, where a reference with newer tables may see letters.
// Thread-safe: Split may be called concurrently on one instance.
class Gpt2PreTokenizer {
 public:
  static Result<std::unique_ptr<Gpt2PreTokenizer>> Create();

  // Calls on_piece for each piece of `text`, in order. Pieces are never empty.
  void Split(std::string_view text, const std::function<void(std::string_view)>& on_piece) const;

  bool uses_jit() const { return uses_jit_; }

 private:
  struct CodeDeleter {
    void operator()(pcre2_real_code_8* code) const;
  };
  using CodePtr = std::unique_ptr<pcre2_real_code_8, CodeDeleter>;

  Gpt2PreTokenizer(CodePtr code, bool uses_jit) : code_(std::move(code)), uses_jit_(uses_jit) {}

  CodePtr code_;
  bool uses_jit_;
};

}  // namespace dgpt
