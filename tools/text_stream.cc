#include "tools/text_stream.h"

#include <algorithm>

namespace dgpt {

TextStream::TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings)
    : decoder_(tokenizer), stop_strings_(std::move(stop_strings)) {
  std::erase(stop_strings_, std::string());
}

std::string TextStream::Emit(size_t count) {
  std::string out = pending_.substr(0, count);
  pending_.erase(0, count);
  text_ += out;
  return out;
}

std::string TextStream::Push(TokenId id) {
  if (stopped_) return {};
  pending_ += decoder_.Push(id);
  size_t earliest_stop = std::string::npos;
  for (const std::string& stop : stop_strings_) {
    earliest_stop = std::min(earliest_stop, pending_.find(stop));
  }
  if (earliest_stop != std::string::npos) {
    stopped_ = true;
    std::string out = Emit(earliest_stop);
    pending_.clear();
    return out;
  }
  // Hold back the longest tail of pending_ that is a prefix of some stop string.
  size_t hold = 0;
  for (const std::string& stop : stop_strings_) {
    for (size_t n = std::min(stop.size() - 1, pending_.size()); n > hold; --n) {
      if (pending_.compare(pending_.size() - n, n, stop, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  return Emit(pending_.size() - hold);
}

std::string TextStream::Finish() {
  if (stopped_) return {};
  pending_ += decoder_.Flush();
  return Emit(pending_.size());
}

}  // namespace dgpt
