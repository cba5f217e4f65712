// GPT-2 byte-level BPE, loaded from Hugging Face's vocab.json + merges.txt.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "base/status.h"
#include "tokenizer/gpt2_pretokenizer.h"
#include "tokenizer/special_tokens.h"
#include "tokenizer/tokenizer.h"

namespace dgpt {

// Byte-exact with the Hugging Face and tiktoken GPT-2 tokenizers on valid UTF-8, and round-trips
// any byte string: Decode(Encode(x)) == x. Special tokens are the vocabulary entries spelled
// "<|...|>". Thread-safe: Encode may run on several threads at once.
class BpeTokenizer final : public Tokenizer {
 public:
  // Errors are one line naming the file (and line of merges.txt) and the problem.
  static Result<std::unique_ptr<BpeTokenizer>> Load(const std::string& vocab_path,
                                                    const std::string& merges_path);

  std::vector<TokenId> Encode(std::string_view text, bool allow_special = true) const override;
  std::string TokenBytes(TokenId id) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  std::optional<TokenId> eos_id() const override { return eos_id_; }

  // Encodes one pre-token (a "word") with BPE alone, appending its ids. O(n log n) in its size.
  void EncodeWord(std::string_view word, std::vector<TokenId>* ids) const;

  // The id of a vocabulary entry, spelled as in vocab.json ("Ġthe"), if there is one.
  std::optional<TokenId> TokenToId(std::string_view token) const;

  const SpecialTokenMatcher& special_tokens() const { return special_tokens_; }

 private:
  struct Merge {
    int32_t rank;    // position in merges.txt; lower merges first
    TokenId result;  // id of the concatenated token
  };
  // Hash for string keys that also accepts string_view, so lookups don't allocate.
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  using TokenIndex = std::unordered_map<std::string, TokenId, StringHash, std::equal_to<>>;

  BpeTokenizer() = default;
  Status LoadVocab(const std::string& path);
  Status LoadMerges(const std::string& path);

  static uint64_t PairKey(TokenId left, TokenId right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  const Merge* FindMerge(TokenId left, TokenId right) const;
  void MergeWord(std::string_view word, std::vector<TokenId>* ids) const;

  TokenIndex token_to_id_;                 // spelled as in vocab.json
  std::vector<std::string> token_bytes_;   // indexed by id: the raw bytes
  std::array<TokenId, 256> byte_token_{};  // the single-byte token of each byte
  std::unordered_map<uint64_t, Merge> merges_;
  SpecialTokenMatcher special_tokens_;
  std::optional<TokenId> eos_id_;
  std::unique_ptr<Gpt2PreTokenizer> pre_tokenizer_;

  // Words repeat a lot in text, so their encodings are remembered (bounded; cleared when full).
  mutable std::mutex cache_mutex_;
  mutable std::unordered_map<std::string, std::vector<TokenId>, StringHash, std::equal_to<>> cache_;
};

}  // namespace dgpt
