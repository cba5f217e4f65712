#include "tokenizer/tokenizer.h"

#include <filesystem>
#include <system_error>

#include "tokenizer/bpe.h"
#include "tokenizer/sentencepiece_tokenizer.h"
#include "tokenizer/utf8.h"

namespace dgpt {

Result<std::string> Tokenizer::Decode(std::span<const TokenId> ids) const {
  std::string text;
  for (const TokenId id : ids) {
    if (id < 0 || id >= vocab_size()) {
      return Status::Error("invalid token id " + std::to_string(id) + " (vocabulary size " +
                           std::to_string(vocab_size()) + ")");
    }
    text += TokenBytes(id);
  }
  return text;
}

Result<std::unique_ptr<Tokenizer>> LoadTokenizer(const std::string& model_dir) {
  namespace fs = std::filesystem;
  std::error_code error;
  if (!fs::is_directory(model_dir, error)) {
    return Status::Error(model_dir + ": not a directory");
  }
  const fs::path dir(model_dir);
  const bool has_vocab = fs::exists(dir / "vocab.json", error);
  const bool has_merges = fs::exists(dir / "merges.txt", error);
  const bool has_spm_model = fs::exists(dir / "tokenizer.model", error);

  // Half a BPE tokenizer is more likely a broken download than a SentencePiece model, so say
  // which file is missing rather than "no tokenizer found" -- unless tokenizer.model is there.
  if ((has_vocab && has_merges) || ((has_vocab || has_merges) && !has_spm_model)) {
    auto bpe = BpeTokenizer::Load((dir / "vocab.json").string(), (dir / "merges.txt").string());
    if (!bpe.ok()) return bpe.status();
    return std::unique_ptr<Tokenizer>(std::move(bpe).value());
  }
  if (has_spm_model) {
    auto spm = SentencePieceTokenizer::Load((dir / "tokenizer.model").string());
    if (!spm.ok()) return spm.status();
    return std::unique_ptr<Tokenizer>(std::move(spm).value());
  }
  return Status::Error(
      model_dir + ": no tokenizer found (expected vocab.json + merges.txt, or tokenizer.model)");
}

std::string StreamingDecoder::Push(TokenId id) {
  // Ids outside the vocabulary carry no bytes; callers that must reject them use Decode.
  if (id >= 0 && id < tokenizer_.vocab_size()) pending_ += tokenizer_.TokenBytes(id);
  // Release everything except a tail that is a valid start of a character still missing bytes.
  // Invalid bytes can never complete, so they go out verbatim instead of blocking the stream.
  const size_t held = IncompleteUtf8TailLength(pending_);
  std::string ready = pending_.substr(0, pending_.size() - held);
  pending_.erase(0, pending_.size() - held);
  return ready;
}

std::string StreamingDecoder::Flush() {
  std::string rest;
  rest.swap(pending_);
  return rest;
}

}  // namespace dgpt
