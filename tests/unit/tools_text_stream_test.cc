// TextStream: whole UTF-8 characters only, and never any part of a stop string.
#include <catch2/catch.hpp>
#include <map>

#include "tools/text_stream.h"

using namespace dgpt;

namespace {

// A vocabulary given as a table, so a test can split text at any byte.
class TableTokenizer : public Tokenizer {
 public:
  explicit TableTokenizer(std::vector<std::string> pieces) : pieces_(std::move(pieces)) {}
  std::vector<TokenId> Encode(std::string_view, bool) const override { return {}; }
  std::string TokenBytes(TokenId id) const override { return pieces_.at(id); }
  int32_t vocab_size() const override { return static_cast<int32_t>(pieces_.size()); }
  std::optional<TokenId> eos_id() const override { return std::nullopt; }

 private:
  std::vector<std::string> pieces_;
};

std::string PushAll(TextStream& stream, std::vector<TokenId> ids,
                    std::vector<std::string>* chunks) {
  std::string out;
  for (TokenId id : ids) {
    chunks->push_back(stream.Push(id));
    out += chunks->back();
    if (stream.stopped()) break;
  }
  return out + stream.Finish();
}

}  // namespace

TEST_CASE("text without stop strings passes straight through", "[text_stream]") {
  TableTokenizer tokenizer({"Hello", ",", " world"});
  TextStream stream(tokenizer, {});
  std::vector<std::string> chunks;
  REQUIRE(PushAll(stream, {0, 1, 2}, &chunks) == "Hello, world");
  REQUIRE(chunks == std::vector<std::string>{"Hello", ",", " world"});
}

TEST_CASE("a stop string ends the text before it, even across tokens", "[text_stream]") {
  TableTokenizer tokenizer({"one ", "tw", "o\nthree", "four"});
  TextStream stream(tokenizer, {"two\n"});
  std::vector<std::string> chunks;
  REQUIRE(PushAll(stream, {0, 1, 2, 3}, &chunks) == "one ");
  REQUIRE(stream.stopped());
  // "tw" could start the stop string, so it was never shown.
  REQUIRE(chunks == std::vector<std::string>{"one ", "", ""});
}

TEST_CASE("held-back text is released once it cannot start a stop string", "[text_stream]") {
  TableTokenizer tokenizer({"a", "S", "T", "x"});
  TextStream stream(tokenizer, {"STOP"});
  std::vector<std::string> chunks;
  REQUIRE(PushAll(stream, {0, 1, 2, 3, 0}, &chunks) == "aSTxa");
  REQUIRE(chunks == std::vector<std::string>{"a", "", "", "STx", "a"});
  REQUIRE_FALSE(stream.stopped());
}

TEST_CASE("a character split across tokens is shown whole", "[text_stream]") {
  const std::string smile = "\xF0\x9F\x99\x82";  // U+1F642
  TableTokenizer tokenizer({smile.substr(0, 2), smile.substr(2), "!"});
  TextStream stream(tokenizer, {});
  std::vector<std::string> chunks;
  REQUIRE(PushAll(stream, {0, 1, 2}, &chunks) == smile + "!");
  REQUIRE(chunks == std::vector<std::string>{"", smile, "!"});
}

TEST_CASE("text held back for a stop string that never comes is flushed at the end",
          "[text_stream]") {
  TableTokenizer tokenizer({"ab", "<", "|"});
  TextStream stream(tokenizer, {"<|end|>"});
  std::vector<std::string> chunks;
  REQUIRE(PushAll(stream, {0, 1, 2}, &chunks) == "ab<|");
  REQUIRE(stream.text() == "ab<|");
}
