// SentencePiece models (tokenizer.model), wrapping Google's sentencepiece library.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tokenizer/special_tokens.h"
#include "tokenizer/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace dgpt {

// Token bytes follow the piece spelling: "▁" stands for a space and byte-fallback pieces
// "<0xAB>" for the byte 0xAB. Control pieces ("<s>", "</s>") and the unknown piece stand for
// their own spelling, and with allow_special the control pieces' spellings in the text encode
// as those ids. Decode drops the space the model puts in front of the text (its "dummy
// prefix"), as sentencepiece does; StreamingDecoder does not, so its first chunk starts with it.
// Round trips are exact only for text the model's normalizer leaves unchanged.
// Thread-safe: sentencepiece's Encode is const and keeps no state.
class SentencePieceTokenizer final : public Tokenizer {
 public:
  static Result<std::unique_ptr<SentencePieceTokenizer>> Load(const std::string& model_path);
  ~SentencePieceTokenizer() override;

  std::vector<TokenId> Encode(std::string_view text, bool allow_special = true) const override;
  std::string TokenBytes(TokenId id) const override;
  Result<std::string> Decode(std::span<const TokenId> ids) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  std::optional<TokenId> eos_id() const override { return eos_id_; }

 private:
  SentencePieceTokenizer();
  void EncodeOrdinaryText(std::string_view text, std::vector<TokenId>* ids) const;

  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
  std::vector<std::string> token_bytes_;  // indexed by id
  SpecialTokenMatcher control_tokens_;
  std::optional<TokenId> eos_id_;
  bool adds_dummy_prefix_ = false;
};

}  // namespace dgpt
