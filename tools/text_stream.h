// Turns sampled tokens into text for a reader: whole UTF-8 characters only, and nothing of a
// stop string ever shown. Text that could still become the start of a stop string is held back
// until it can't.
#pragma once

#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace dgpt {

class TextStream {
 public:
  TextStream(const Tokenizer& tokenizer, std::vector<std::string> stop_strings);

  // Returns the text that may be shown now. After a stop string appears, stopped() is true and
  // the text up to (not including) it has been returned.
  std::string Push(TokenId id);
  // Returns everything still held back (unless stopped).
  std::string Finish();

  bool stopped() const { return stopped_; }
  // All text returned so far.
  const std::string& text() const { return text_; }

 private:
  std::string Emit(size_t count);

  StreamingDecoder decoder_;
  std::vector<std::string> stop_strings_;
  std::string pending_;
  std::string text_;
  bool stopped_ = false;
};

}  // namespace dgpt
