// The tokenizer interface shared by GPT-2 byte-level BPE and SentencePiece models.
// Token ids are int32 (GPT-2 vocabularies fit easily; negative ids never occur).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "base/token.h"

namespace dgpt {

// Once loaded, a tokenizer may be used from several threads at once (Encode included; any
// internal cache is synchronized).
class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes arbitrary bytes (valid or invalid UTF-8). With allow_special, special-token
  // strings in the text (e.g. "<|endoftext|>") become their ids; otherwise they are plain text.
  virtual std::vector<TokenId> Encode(std::string_view text, bool allow_special = true) const = 0;

  // The exact bytes a token stands for (may be part of a multi-byte UTF-8 character).
  // REQUIRES: 0 <= id < vocab_size()
  virtual std::string TokenBytes(TokenId id) const = 0;

  // Concatenated bytes of the tokens; invalid ids are an error.
  virtual Result<std::string> Decode(std::span<const TokenId> ids) const;

  virtual int32_t vocab_size() const = 0;
  // The end-of-text token (50256 for GPT-2), if the vocabulary has one.
  virtual std::optional<TokenId> eos_id() const = 0;
};

// Loads the tokenizer found in a model folder: vocab.json + merges.txt (GPT-2 BPE) or
// tokenizer.model (SentencePiece). Errors name the file and what is wrong with it.
Result<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir);

// Turns a stream of token ids into printable text: bytes of a UTF-8 character split across
// tokens are held back until the character is complete, so every chunk returned is whole.
class StreamingDecoder {
 public:
  explicit StreamingDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // Returns the text that became complete with this token (possibly empty). Bytes that can
  // never become valid UTF-8 (a stray continuation byte, an invalid lead byte, a sequence broken
  // off early) are released verbatim rather than held. Ids outside the vocabulary add nothing.
  std::string Push(TokenId id);
  // Returns whatever is still held back (an incomplete or invalid sequence), verbatim.
  std::string Flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

}  // namespace dgpt
