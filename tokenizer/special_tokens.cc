#include "tokenizer/special_tokens.h"

#include <algorithm>

namespace dgpt {

SpecialTokenMatcher::SpecialTokenMatcher(std::vector<std::pair<std::string, TokenId>> tokens) {
  for (auto& token : tokens) {
    if (!token.first.empty()) tokens_.push_back(std::move(token));
  }
}

void SpecialTokenMatcher::Split(std::string_view text,
                                const std::function<void(std::string_view)>& on_text,
                                const std::function<void(TokenId)>& on_special) const {
  // Next occurrence of each token at or after `pos`; refreshed only once `pos` passes it, so
  // every token's occurrences are searched for once in total rather than once per match.
  std::vector<size_t> next(tokens_.size());
  for (size_t i = 0; i < tokens_.size(); ++i) next[i] = text.find(tokens_[i].first);

  size_t pos = 0;
  while (pos < text.size()) {
    size_t best = tokens_.size();
    for (size_t i = 0; i < tokens_.size(); ++i) {
      if (next[i] != std::string_view::npos && next[i] < pos) {
        next[i] = text.find(tokens_[i].first, pos);
      }
      if (next[i] == std::string_view::npos) continue;
      if (best == tokens_.size() || next[i] < next[best] ||
          (next[i] == next[best] && tokens_[i].first.size() > tokens_[best].first.size())) {
        best = i;
      }
    }
    if (best == tokens_.size()) break;
    if (next[best] > pos) on_text(text.substr(pos, next[best] - pos));
    on_special(tokens_[best].second);
    pos = next[best] + tokens_[best].first.size();
  }
  if (pos < text.size()) on_text(text.substr(pos));
}

}  // namespace dgpt
