// Finds special-token strings such as "<|endoftext|>" in text, so that they can be encoded as
// their own ids instead of being split into ordinary tokens.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace dgpt {

class SpecialTokenMatcher {
 public:
  SpecialTokenMatcher() = default;
  explicit SpecialTokenMatcher(std::vector<std::pair<std::string, TokenId>> tokens);

  bool empty() const { return tokens_.empty(); }
  const std::vector<std::pair<std::string, TokenId>>& tokens() const { return tokens_; }

  // Walks `text` left to right, calling on_text for each (non-empty) stretch of ordinary text
  // and on_special for each special token. Where two tokens start at the same place the longer
  // one wins. Linear in the text size times the number of special tokens.
  void Split(std::string_view text, const std::function<void(std::string_view)>& on_text,
             const std::function<void(TokenId)>& on_special) const;

 private:
  std::vector<std::pair<std::string, TokenId>> tokens_;  // no empty strings
};

}  // namespace dgpt
